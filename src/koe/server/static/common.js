// What both pages share: the API key (kept in this browser's localStorage), authorized requests to koe with errors
// turned into sentences, and small DOM helpers.

const KEY_STORAGE = "koe.apiKey";

export function storedKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return ""; // storage can be disabled (private windows, policies); the key then lasts for the page only
  }
}

export function storeKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    /* see storedKey */
  }
}

// An input bound to the stored key: edits are saved at once, and `onChange` hears about them.
export function bindKeyInput(input, onChange) {
  input.value = storedKey();
  input.addEventListener("change", () => {
    storeKey(input.value.trim());
    onChange?.(input.value.trim());
  });
}

export class ApiError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.status = status;
  }
}

export function authHeaders(key = storedKey()) {
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// fetch() with the key, whose failures say what happened in words: unreachable server, refused key, koe's message.
export async function api(path, { method = "GET", body, key, signal } = {}) {
  const headers = { ...authHeaders(key) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      signal,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(`koe is not reachable at ${location.host} (is \`koe serve\` running?)`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON: use the status below */
  }
  if (!response.ok) throw new ApiError(refusal(response.status, data), response.status);
  return data;
}

export function refusal(status, data) {
  const said = data?.error?.message;
  if (status === 401) {
    const hint = storedKey() ? "The API key was not accepted." : "koe needs an API key: enter one above.";
    return said ? `${hint} (${said})` : hint;
  }
  if (status === 403) return said || "koe refused the request from this machine.";
  return said ? `${said} (HTTP ${status})` : `koe answered HTTP ${status}.`;
}

// A banner that shows one error at a time in words; `clear()` hides it.
export class ErrorBanner {
  constructor(element) {
    this.element = element;
  }
  show(message) {
    this.element.textContent = message;
    this.element.hidden = false;
  }
  clear() {
    this.element.textContent = "";
    this.element.hidden = true;
  }
}

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export function formatMs(ms) {
  if (ms === null || ms === undefined) return "–";
  return ms >= 10000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}
