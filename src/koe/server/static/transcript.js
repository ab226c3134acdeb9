// The voice console's two running records: the conversation (one line per user and assistant turn, filled in as
// transcripts stream) and the latency panel (one row per reply, from koe.response.timing).

import { el, formatMs } from "./common.js";

const MAX_TURNS = 200; // older turns scroll away; the page is a console, not an archive
const MAX_TIMINGS = 12;

export class Conversation {
  constructor(list) {
    this.list = list;
    this.turns = new Map(); // item id -> {node, text}
  }

  turn(itemId, role) {
    let turn = this.turns.get(itemId);
    if (!turn) {
      const text = el("span", { class: "text" });
      const node = el(
        "li",
        { class: `turn ${role} pending`, dataset: { item: itemId, role } },
        el("span", { class: "who" }, role === "user" ? "You" : "koe"),
        text,
      );
      turn = { node, text, content: "" };
      this.turns.set(itemId, turn);
      this.list.append(node);
      this.trim();
      node.scrollIntoView({ block: "nearest" });
    }
    return turn;
  }

  write(itemId, role, text, final) {
    const turn = this.turn(itemId, role);
    turn.content = final ? text || turn.content : turn.content + text;
    turn.text.textContent = turn.content || (final ? "(nothing heard)" : "…");
    turn.node.classList.toggle("pending", !final);
    turn.node.scrollIntoView({ block: "nearest" });
  }

  fail(itemId, message) {
    const turn = this.turn(itemId, "user");
    turn.node.classList.remove("pending");
    turn.node.classList.add("failed");
    turn.text.textContent = `(not transcribed: ${message})`;
  }

  interrupted(itemId, heardMs) {
    const turn = this.turns.get(itemId);
    if (!turn) return;
    turn.node.classList.add("interrupted");
    turn.node.append(el("span", { class: "tag" }, `interrupted after ${formatMs(heardMs)}`));
  }

  trim() {
    while (this.list.children.length > MAX_TURNS) {
      const first = this.list.firstElementChild;
      this.turns.delete(first.dataset.item);
      first.remove();
    }
  }
}

// Parts of one reply's latency, as koe bench latency defines them: total runs from the end of the user's speech
// (the last voiced frame) to the first reply audio; the others are the parts, which overlap.
const PARTS = [
  ["turn_end_ms", "turn end", "end of speech to the turn's commit: the pause turn detection waited for"],
  ["stt_ms", "STT", "transcribing the turn"],
  ["llm_first_token_ms", "LLM", "the language model's first token"],
  ["tts_first_audio_ms", "TTS", "first clause handed to the voice, to its first audio"],
];

export class LatencyPanel {
  constructor(root) {
    this.latest = root.querySelector("[data-latest]");
    this.bars = root.querySelector("[data-bars]");
    this.table = root.querySelector("tbody");
    this.count = 0;
  }

  add(timing) {
    this.count += 1;
    this.latest.textContent = formatMs(timing.total_ms);
    this.latest.parentElement.dataset.total = String(Math.round(timing.total_ms ?? 0));
    this.bars.replaceChildren(
      ...PARTS.map(([key, label, meaning]) => bar(label, meaning, timing[key], timing.total_ms)),
    );
    const row = el(
      "tr",
      { dataset: { response: timing.response_id } },
      el("td", {}, String(this.count)),
      el("td", { class: "total" }, plain(timing.total_ms)),
      ...PARTS.map(([key]) => el("td", {}, plain(timing[key]))),
    );
    this.table.prepend(row);
    while (this.table.children.length > MAX_TIMINGS) this.table.lastElementChild.remove();
  }
}

function plain(ms) {
  return ms === null || ms === undefined ? "–" : String(Math.round(ms));
}

function bar(label, meaning, ms, total) {
  const share = total > 0 && ms !== null && ms !== undefined ? Math.min(100, (100 * ms) / total) : 0;
  const fill = el("span", { class: "fill" });
  fill.style.width = `${share}%`;
  return el(
    "div",
    { class: "bar", title: meaning },
    el("span", { class: "label" }, label),
    el("span", { class: "track" }, fill),
    el("span", { class: "value" }, formatMs(ms)),
  );
}

// The level meter: the loudness of each 40 ms chunk sent, on a dBFS scale, and whether koe's VAD hears speech.
export class LevelMeter {
  constructor(root) {
    this.root = root;
    this.fill = root.querySelector(".fill");
    this.label = root.querySelector("[data-label]");
    this.smoothed = 0;
  }

  level(rms) {
    const db = rms > 0 ? 20 * Math.log10(rms) : -100;
    const target = Math.max(0, Math.min(1, (db + 60) / 60)); // -60 dBFS … 0 dBFS
    this.smoothed = target > this.smoothed ? target : this.smoothed * 0.85 + target * 0.15; // fast attack, slow decay
    this.fill.style.width = `${(this.smoothed * 100).toFixed(1)}%`;
  }

  hearing(yes) {
    this.root.classList.toggle("hearing", yes);
    this.label.textContent = yes ? "koe hears you" : "listening";
  }

  idle() {
    this.root.classList.remove("hearing");
    this.fill.style.width = "0%";
    this.label.textContent = "microphone off";
  }
}
