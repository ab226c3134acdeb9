// The voice console page: the Start button, the settings form (kept in localStorage, applied live with
// session.update), and the view that VoiceSession reports to: status, meter, conversation, latency, errors.

import { ErrorBanner, api, bindKeyInput, formatMs, storedKey } from "./common.js";
import { Conversation, LatencyPanel, LevelMeter } from "./transcript.js";
import { VoiceSession } from "./voice.js";

const SETTINGS_STORAGE = "koe.console.settings";

const $ = (id) => document.getElementById(id);
const errors = new ErrorBanner($("error"));
const form = $("settings");
const startButton = $("start");
const statusBadge = $("status");
const played = $("played");
const notice = $("notice");
const conversation = new Conversation($("conversation"));
const latency = new LatencyPanel($("latency"));
const meter = new LevelMeter($("meter"));

let session = null;
let hearing = false;
let speaking = false;

function readSettings() {
  const data = new FormData(form);
  return {
    voice: data.get("voice") || "",
    instructions: data.get("instructions") || "",
    turnDetection: data.get("turnDetection") || "server_vad",
    silenceMs: Math.max(100, Math.min(5000, Number(data.get("silenceMs")) || 500)),
    noiseSuppression: data.get("noiseSuppression") === "on",
    echoCancellation: data.get("echoCancellation") === "on",
    browserEchoCancellation: data.get("browserEchoCancellation") === "on",
  };
}

function restoreSettings() {
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(SETTINGS_STORAGE) || "{}");
  } catch {
    return;
  }
  for (const [name, value] of Object.entries(saved)) {
    const field = form.elements.namedItem(name);
    if (!field || field instanceof RadioNodeList) continue;
    if (field.type === "checkbox") field.checked = Boolean(value);
    else if (name !== "voice") field.value = String(value); // the voice waits for the list of installed voices
  }
  form.dataset.savedVoice = saved.voice || "";
}

function saveSettings() {
  try {
    localStorage.setItem(SETTINGS_STORAGE, JSON.stringify(readSettings()));
  } catch {
    /* storage disabled: settings last for this page only */
  }
}

function showStatus() {
  let state = "idle";
  let text = "Not connected";
  if (session && !session.ready) [state, text] = ["connecting", "Connecting…"];
  else if (session && hearing) [state, text] = ["hearing", "koe hears you"];
  else if (session && speaking) [state, text] = ["speaking", "koe is speaking"];
  else if (session) [state, text] = ["listening", "Listening"];
  statusBadge.dataset.state = state;
  statusBadge.textContent = text;
}

async function loadVoices() {
  const data = await api("/v1/voices");
  const select = form.elements.namedItem("voice");
  const wanted = select.value || form.dataset.savedVoice || "";
  const language = Object.fromEntries((data?.details || []).map((voice) => [voice.name, voice.language]));
  const options = (data?.voices || []).map((name) => {
    const notes = [language[name], name === data.default ? "default" : ""].filter(Boolean).join(", ");
    return new Option(notes ? `${name} (${notes})` : name, name);
  });
  select.replaceChildren(new Option("(koe's default)", ""), ...options);
  if ([...select.options].some((option) => option.value === wanted)) select.value = wanted;
  if (data?.error) notice.textContent = `koe cannot speak: ${data.error}.`;
}

const view = {
  micReady(label, rate) {
    $("mic").textContent = `Microphone: ${label} (${rate} Hz here, sent to koe as 24 kHz PCM16).`;
  },
  connected() {
    showStatus();
  },
  sessionUpdated() {},
  hearing(yes) {
    hearing = yes;
    meter.hearing(yes);
    showStatus();
  },
  userTurn(item) {
    conversation.write(item, "user", "", false);
  },
  userText(item, text, final) {
    conversation.write(item, "user", text, final);
  },
  userFailed(item, message) {
    conversation.fail(item, message);
  },
  assistantTurn(item) {
    conversation.turn(item, "assistant");
  },
  assistantText(item, text, final) {
    conversation.write(item, "assistant", text, final);
  },
  interrupted(item, heardMs) {
    conversation.interrupted(item, heardMs);
  },
  responseDone(response) {
    if (response.status === "failed") {
      notice.textContent = `koe could not answer: ${response.status_details?.error?.message || "the reply failed"}.`;
    }
  },
  timing(event) {
    latency.add(event);
  },
  playback(message) {
    played.dataset.playedMs = String(message.totalPlayedMs);
    played.textContent = formatMs(message.totalPlayedMs);
    speaking = message.playing;
    showStatus();
  },
  level(rms) {
    meter.level(rms);
  },
  notice(text) {
    notice.textContent = text;
  },
  closed(reason) {
    errors.show(reason);
    stopped();
  },
};

function stopped() {
  session = null;
  hearing = false;
  speaking = false;
  meter.idle();
  startButton.textContent = "Start talking";
  startButton.disabled = false;
  showStatus();
}

async function start() {
  errors.clear();
  notice.textContent = "";
  startButton.disabled = true;
  const settings = readSettings();
  session = new VoiceSession(view);
  showStatus();
  try {
    await session.start({
      key: storedKey(),
      settings,
      browserEchoCancellation: settings.browserEchoCancellation,
      preflight: loadVoices,
    });
    startButton.textContent = "Stop";
    meter.hearing(false);
  } catch (error) {
    session?.stop();
    stopped();
    errors.show(error.message);
    return;
  } finally {
    startButton.disabled = false;
  }
  showStatus();
}

startButton.addEventListener("click", () => {
  if (session) {
    session.stop();
    stopped();
  } else {
    start();
  }
});

form.addEventListener("change", (event) => {
  saveSettings();
  if (event.target.name === "browserEchoCancellation") {
    if (session) notice.textContent = "Browser echo cancellation changes at the next Start.";
    return;
  }
  session?.update(readSettings());
});
form.addEventListener("submit", (event) => event.preventDefault());

bindKeyInput($("key"), () => {
  errors.clear();
  loadVoices().catch((error) => errors.show(error.message));
});
restoreSettings();
loadVoices().catch((error) => errors.show(error.message));
showStatus();
