// One voice conversation with koe through its Realtime door (OpenAI GA dialect on /v1/realtime): microphone audio
// out as input_audio_buffer.append, reply audio in and played, transcripts and timings passed to the page, and
// barge-in handled as a good Realtime client does: stop playing at once, then truncate the reply to what was heard.
//
// `new VoiceSession(view)`, then `await session.start({key, settings, browserEchoCancellation, preflight})`;
// `update(settings)` applies changed settings with session.update; `stop()` ends it. `view` receives everything the
// page shows.

import { AudioIO, toBase64 } from "./audio.js";

const MAX_SOCKET_BACKLOG_BYTES = 1 << 20; // past this, mic chunks are dropped rather than queued behind a stall
const UNHEARD_MS = 30; // less unplayed audio than this is not worth a truncate

export function realtimeUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/realtime?model=koe&koe_timings=1`;
}

// The session.update for the page's settings (GA shape; the echo canceller switch is koe's own extension).
export function sessionUpdate(settings) {
  const input = {
    format: { type: "audio/pcm", rate: 24000 },
    transcription: { model: "whisper-1" },
    noise_reduction: settings.noiseSuppression ? { type: "near_field" } : null,
    turn_detection: { type: settings.turnDetection, silence_duration_ms: settings.silenceMs },
    koe_echo_cancellation: settings.echoCancellation ? { type: "server_echo_cancellation" } : null,
  };
  const output = { format: { type: "audio/pcm", rate: 24000 } };
  if (settings.voice) output.voice = settings.voice;
  return {
    type: "session.update",
    session: { type: "realtime", instructions: settings.instructions, audio: { input, output } },
  };
}

export class VoiceSession {
  constructor(view) {
    this.view = view;
    this.audio = null;
    this.socket = null;
    this.ready = false; // session.created seen
    this.stopping = false;
    this.received = new Map(); // assistant item -> ms of reply audio received
    this.responseOf = new Map(); // assistant item -> response id
    this.finished = new Set(); // response ids whose response.done arrived
    this.silenced = new Set(); // items whose late audio must not play (flushed by a barge-in)
    this.pendingTruncates = new Map(); // item -> ms heard, sent once the item's response is done
    this.droppedChunks = 0;
  }

  async start({ key, settings, browserEchoCancellation, preflight }) {
    this.settings = settings;
    // Browsers hide why a WebSocket failed; a plain request first tells a refused key from a stopped server, and
    // spares the microphone prompt when koe would refuse anyway. (Audio may still start after it: the click
    // counts as the page's user activation from then on.)
    if (preflight) await preflight();
    this.audio = await AudioIO.open({
      browserEchoCancellation,
      onChunk: (pcm, rms, peak) => this.onChunk(pcm, rms, peak),
      onPlayback: (message) => this.onPlayback(message),
    });
    this.view.micReady(this.audio.micLabel, this.audio.context.sampleRate);
    await this.connect(key);
  }

  connect(key) {
    const protocols = key ? ["realtime", `openai-insecure-api-key.${key}`] : ["realtime"];
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(realtimeUrl(), protocols);
      this.socket = socket;
      let opened = false;
      socket.onopen = () => {
        opened = true;
        resolve();
      };
      socket.onmessage = (message) => this.onEvent(JSON.parse(message.data));
      socket.onclose = (event) => {
        const reason = closeReason(event, opened);
        this.shutdown();
        if (!opened) reject(new Error(reason));
        else if (!this.stopping) this.view.closed(reason);
      };
    });
  }

  update(settings) {
    this.settings = settings;
    if (this.ready) this.send(sessionUpdate(settings));
  }

  send(event) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(event));
  }

  stop() {
    this.stopping = true;
    this.socket?.close(1000, "stopped by the user");
    this.shutdown();
  }

  shutdown() {
    this.ready = false;
    const audio = this.audio;
    this.audio = null;
    audio?.close();
  }

  onChunk(pcm, rms, peak) {
    this.view.level(rms, peak);
    if (!this.ready) return;
    if (this.socket.bufferedAmount > MAX_SOCKET_BACKLOG_BYTES) {
      this.droppedChunks += 1;
      this.view.notice(`The connection is not keeping up: ${this.droppedChunks} microphone chunks dropped.`);
      return;
    }
    this.send({ type: "input_audio_buffer.append", audio: toBase64(pcm) });
  }

  onEvent(event) {
    const view = this.view;
    switch (event.type) {
      case "session.created":
        this.ready = true;
        this.send(sessionUpdate(this.settings));
        view.connected(event.session);
        break;
      case "session.updated":
        view.sessionUpdated(event.session);
        break;
      case "input_audio_buffer.speech_started":
        view.hearing(true);
        view.userTurn(event.item_id);
        this.bargeIn(); // stop at once: the server's output_audio_buffer.cleared comes a round trip later
        break;
      case "input_audio_buffer.speech_stopped":
        view.hearing(false);
        break;
      case "conversation.item.input_audio_transcription.delta":
        view.userText(event.item_id, event.delta, false);
        break;
      case "conversation.item.input_audio_transcription.completed":
        view.userText(event.item_id, event.transcript, true);
        break;
      case "conversation.item.input_audio_transcription.failed":
        view.userFailed(event.item_id, event.error?.message || "transcription failed");
        break;
      case "response.output_item.added":
        if (event.item?.role === "assistant") {
          this.responseOf.set(event.item.id, event.response_id);
          view.assistantTurn(event.item.id);
        }
        break;
      case "response.output_audio_transcript.delta":
      case "response.output_text.delta":
        view.assistantText(event.item_id, event.delta, false);
        break;
      case "response.output_audio_transcript.done":
        view.assistantText(event.item_id, event.transcript, true);
        break;
      case "response.output_text.done":
        view.assistantText(event.item_id, event.text, true);
        break;
      case "response.output_audio.delta":
        this.onAudio(event);
        break;
      case "output_audio_buffer.cleared":
        // Usually the echo of a barge-in this page already handled; otherwise koe flushed a reply on its own.
        if (this.unsilenced((item) => this.responseOf.get(item) === event.response_id || !event.response_id)) {
          this.bargeIn();
        }
        break;
      case "conversation.item.truncated":
        if (this.unsilenced((item) => item === event.item_id)) this.bargeIn();
        break;
      case "response.done":
        this.onResponseDone(event.response);
        break;
      case "koe.response.timing":
        view.timing(event);
        break;
      case "error":
        view.notice(`koe: ${event.error?.message || "error"}`);
        break;
      default:
        break;
    }
  }

  onAudio(event) {
    const item = event.item_id;
    if (this.silenced.has(item) || !this.audio) return;
    this.responseOf.set(item, event.response_id);
    this.received.set(item, (this.received.get(item) || 0) + this.audio.play(item, event.delta));
  }

  unsilenced(matches) {
    return [...this.received.keys()].some((item) => matches(item) && !this.silenced.has(item));
  }

  // Flush local playback; the worklet's "cleared" answer says what was heard of each item.
  bargeIn() {
    for (const item of this.received.keys()) this.silenced.add(item);
    this.audio?.stopPlayback();
  }

  onPlayback(message) {
    this.view.playback(message);
    if (message.type !== "cleared") return;
    for (const [item, heard] of Object.entries(message.played)) {
      const received = this.received.get(item) || 0;
      if (received - heard < UNHEARD_MS) continue;
      this.view.interrupted(item, heard, received);
      this.pendingTruncates.set(item, heard);
      if (this.finished.has(this.responseOf.get(item))) this.truncate(item);
    }
  }

  onResponseDone(response) {
    this.finished.add(response.id);
    for (const [item, responseId] of this.responseOf) {
      if (responseId === response.id && this.pendingTruncates.has(item)) this.truncate(item);
    }
    this.view.responseDone(response);
  }

  truncate(item) {
    const heard = this.pendingTruncates.get(item);
    this.pendingTruncates.delete(item);
    this.send({ type: "conversation.item.truncate", item_id: item, content_index: 0, audio_end_ms: Math.floor(heard) });
  }
}

function closeReason(event, opened) {
  if (!opened) {
    return `Could not open a WebSocket to ${location.host}/v1/realtime (koe may have stopped, or refused the key).`;
  }
  if (event.code === 1001 && event.reason === "session_expired") {
    return "The session reached koe's time limit and was closed. Press Start for a new one.";
  }
  const why = event.reason ? `: ${event.reason}` : "";
  if (event.code === 1006) return "The connection to koe was lost (the server stopped or the network dropped).";
  return `koe closed the connection (code ${event.code}${why}).`;
}
