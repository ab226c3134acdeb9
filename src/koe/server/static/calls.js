// The call monitor page: every live ACS call and Sora connection in koe's call registry. Events are pushed by the
// same stream API users read (/v1/calls/*/events, as server-sent events), and GET /v1/calls fills in calls that were
// already running and is re-read every few seconds for status that changes without an event.
//
// The stream is read with fetch() rather than EventSource so that it can carry the API key in a header.

import { ApiError, ErrorBanner, api, authHeaders, bindKeyInput, refusal } from "./common.js";
import { CallCard } from "./callcard.js";

const REFRESH_MS = 5000;
const RETRY_MS = 2000;
const SOON_MS = 300; // a burst of callbacks becomes one refresh
const MAX_CARDS = 50; // ended calls beyond this are dropped from the page (koe keeps them for a while)

const $ = (id) => document.getElementById(id);
const errors = new ErrorBanner($("error"));
const statusBadge = $("status");
const list = $("calls");
const cards = new Map(); // call id -> CallCard

let following = null; // AbortController of the running event stream

function card(id) {
  let found = cards.get(id);
  if (!found) {
    found = new CallCard(id, control);
    cards.set(id, found);
    list.prepend(found.node); // newest first
    prune();
  }
  return found;
}

function prune() {
  const ended = [...cards.values()].filter((c) => c.state === "ended");
  while (cards.size > MAX_CARDS && ended.length) {
    const oldest = ended.pop();
    oldest.node.remove();
    cards.delete(oldest.id);
  }
}

function control(id, action) {
  return api(`/v1/calls/${encodeURIComponent(id)}/media/${action}`, {
    method: "POST",
    body: { operationContext: `koe-monitor-${action}` },
  });
}

function setStatus(state, text) {
  statusBadge.dataset.state = state;
  statusBadge.textContent = text;
}

async function refresh() {
  const data = await api("/v1/calls");
  const calls = (data?.calls || []).sort((a, b) => a.started_at - b.started_at);
  for (const snapshot of calls) card(snapshot.id).merge(snapshot);
}

async function follow(signal) {
  let response;
  try {
    response = await fetch("/v1/calls/*/events", { headers: authHeaders(), signal, cache: "no-store" });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(`koe is not reachable at ${location.host} (is \`koe serve\` running?)`);
  }
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new ApiError(refusal(response.status, body), response.status);
  }
  setStatus("listening", "Live");
  errors.clear();
  await refresh(); // after subscribing, so nothing falls between the snapshot and the stream
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data) receive(JSON.parse(data));
    }
  }
}

function receive(event) {
  if (!event.call_id) return;
  card(event.call_id).apply(event);
  // Call Automation callbacks change status (media streaming, connection) that only GET /v1/calls shows.
  if (event.type === "acs.callback" || event.type === "call.state") soon();
}

let pending = null;
function soon() {
  clearTimeout(pending);
  pending = setTimeout(() => refresh().catch((error) => errors.show(error.message)), SOON_MS);
}

// Follow the stream for as long as the page is open, reconnecting after failures with the reason on screen.
async function run() {
  following?.abort();
  const controller = new AbortController();
  following = controller;
  while (!controller.signal.aborted) {
    try {
      await follow(controller.signal);
      setStatus("connecting", "Reconnecting…");
    } catch (error) {
      if (controller.signal.aborted) return;
      setStatus("idle", error.status === 401 || error.status === 403 ? "Not allowed" : "Disconnected");
      errors.show(error.message);
      if (error.status === 401 || error.status === 403) return; // wait for a new key
    }
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
  }
}

setInterval(() => {
  if (statusBadge.dataset.state === "listening") refresh().catch((error) => errors.show(error.message));
}, REFRESH_MS);

bindKeyInput($("key"), () => {
  errors.clear();
  run();
});
setStatus("connecting", "Connecting…");
run();
