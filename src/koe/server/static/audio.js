// The browser's audio for the voice console: one AudioContext at the device's own rate, the microphone through the
// capture worklet (PCM16 24 kHz chunks out), and reply audio through the playback worklet (a flushable queue).
// `await AudioIO.open(...)` must follow a click: browsers only start audio in a page the user has interacted with.

const CAPTURE_URL = new URL("./worklets/capture.js", import.meta.url);
const PLAYBACK_URL = new URL("./worklets/playback.js", import.meta.url);
// Firefox keeps a context suspended, with no error and resume() never settling, while it has no output device to play
// on (no sound server, or none that answers). A Bluetooth headset can take a few seconds to wake; longer is a failure.
const AUDIO_START_TIMEOUT_MS = 8000;

export class AudioIO {
  // onChunk(ArrayBuffer pcm16, rms, peak); onPlayback(status) with the playback worklet's counters.
  static async open({ browserEchoCancellation, onChunk, onPlayback }) {
    if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
      throw new Error(
        "This browser only allows the microphone on https:// pages or on http://localhost / http://127.0.0.1. " +
          "Open the console through one of those addresses.",
      );
    }
    if (typeof AudioWorkletNode === "undefined") {
      throw new Error("This browser has no AudioWorklet support; use a current Chromium or Firefox.");
    }
    const context = new AudioContext({ latencyHint: "interactive" });
    const io = new AudioIO(context);
    try {
      await started(context);
      await loadWorklets(context);
      io.stream = await microphone(browserEchoCancellation);
      io.connect(onChunk, onPlayback);
    } catch (error) {
      await io.close();
      throw error;
    }
    return io;
  }

  constructor(context) {
    this.context = context;
    this.stream = null;
    this.capture = null;
    this.playback = null;
  }

  connect(onChunk, onPlayback) {
    const context = this.context;
    const source = context.createMediaStreamSource(this.stream);
    this.capture = new AudioWorkletNode(context, "koe-capture", {
      numberOfOutputs: 1,
      channelCountMode: "explicit",
      channelCount: 1,
    });
    this.capture.port.onmessage = ({ data }) => {
      if (data.type === "chunk") onChunk(data.pcm, data.rms, data.peak);
    };
    // A muted path to the destination keeps the capture node running in every browser.
    const mute = new GainNode(context, { gain: 0 });
    source.connect(this.capture).connect(mute).connect(context.destination);
    this.playback = new AudioWorkletNode(context, "koe-playback", { numberOfInputs: 0, outputChannelCount: [1] });
    this.playback.port.onmessage = ({ data }) => onPlayback(data);
    this.playback.connect(context.destination);
  }

  get micLabel() {
    return this.stream?.getAudioTracks()[0]?.label || "microphone";
  }

  // Queue base64 PCM16 24 kHz reply audio for `item`.
  play(item, base64) {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const view = new DataView(bytes.buffer);
    const samples = new Float32Array(bytes.length >> 1);
    for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(i * 2, true) / 0x8000;
    const ms = (samples.length * 1000) / 24000; // measured before the transfer empties `samples`
    this.playback.port.postMessage({ type: "push", item, samples: samples.buffer }, [samples.buffer]);
    return ms;
  }

  // Drop everything queued; the worklet answers with a "cleared" message saying how much of each item was heard.
  stopPlayback() {
    this.playback?.port.postMessage({ type: "clear" });
  }

  async close() {
    for (const track of this.stream?.getTracks() || []) track.stop();
    this.capture?.disconnect();
    this.playback?.disconnect();
    if (this.context.state !== "closed") await this.context.close();
  }
}

async function started(context) {
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(resolve, AUDIO_START_TIMEOUT_MS);
  });
  await Promise.race([context.resume(), timeout]);
  clearTimeout(timer);
  if (context.state !== "running") {
    const seconds = AUDIO_START_TIMEOUT_MS / 1000;
    throw new Error(
      `The browser's audio did not start within ${seconds} s: check that a speaker or headphones are connected ` +
        "and working, then press Start again.",
    );
  }
}

async function loadWorklets(context) {
  try {
    await context.audioWorklet.addModule(CAPTURE_URL);
    await context.audioWorklet.addModule(PLAYBACK_URL);
  } catch (error) {
    throw new Error(`The page's audio code could not be loaded from koe (is it still running?): ${error.message}`);
  }
}

async function microphone(echoCancellation) {
  try {
    return await navigator.mediaDevices.getUserMedia({
      // koe does its own noise suppression (a session setting); the browser's would hide what koe's does.
      audio: { channelCount: 1, echoCancellation, noiseSuppression: false, autoGainControl: true },
    });
  } catch (error) {
    throw new Error(microphoneProblem(error));
  }
}

function microphoneProblem(error) {
  switch (error.name) {
    case "NotAllowedError":
    case "SecurityError":
      return (
        "Microphone permission was denied. Allow the microphone for this page (the icon in the address bar) " +
        "and press Start again."
      );
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Connect one and press Start again.";
    case "NotReadableError":
    case "AbortError":
      return "The microphone could not be opened: another application may be using it.";
    default:
      return `The microphone could not be opened: ${error.message || error.name}.`;
  }
}

// Encode PCM bytes as base64 for input_audio_buffer.append.
export function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}
