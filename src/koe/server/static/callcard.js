// One call on the monitor: its state, door and mode, the streaming controls (ACS calls), and a lane per participant
// with that participant's rolling transcript. `apply(event)` takes events from /v1/calls/{id}/events; `merge(snapshot)`
// takes a GET /v1/calls entry. Both are idempotent for final transcripts (keyed by item id), so the two can overlap.

import { el, formatMs } from "./common.js";

const MAX_ENTRIES = 100; // per lane; the rest scroll away (GET /v1/calls/{id} keeps the full transcript)
const KOE = "koe"; // the lane for koe's own replies (agent and bridge modes)
const MIXED = "(mixed audio)"; // mixed ACS audio carries no participant

export class CallCard {
  constructor(id, onControl) {
    this.id = id;
    this.lanes = new Map(); // participant -> {node, list, partial, items: Set}
    this.state = "connecting";
    this.door = "";
    this.mode = "";
    this.info = {};
    this.startedAt = null;
    this.holder = "";
    this.title = el("h3", {}, id);
    this.badge = el("span", { class: "state" });
    this.meta = el("span", { class: "meta" });
    this.actions = el("div", { class: "actions" });
    this.problem = el("p", { class: "problem", role: "status" });
    this.laneBox = el("div", { class: "lanes" });
    this.node = el(
      "article",
      { class: "panel call", dataset: { callId: id } },
      el("header", {}, this.title, this.badge, this.meta, this.actions),
      this.laneBox,
      this.problem,
    );
    this.onControl = onControl;
    this.render();
  }

  merge(snapshot) {
    Object.assign(this, { state: snapshot.state, door: snapshot.door, mode: snapshot.mode, info: snapshot.info });
    this.startedAt = snapshot.started_at;
    this.holder = snapshot.node || this.holder; // the cluster node holding the call (koe.server.cluster)
    for (const [who, person] of Object.entries(snapshot.participants || {})) this.lane(who).speaking(person.speaking);
    for (const entry of snapshot.transcript || []) this.final(entry.participant, entry);
    for (const [who, text] of Object.entries(snapshot.partials || {})) this.lane(who).partial(text);
    this.render();
  }

  apply(event) {
    const who = event.participant ?? null;
    switch (event.type) {
      case "call.started":
        Object.assign(this, { door: event.door, mode: event.mode, startedAt: event.time });
        this.holder = event.node || this.holder;
        break;
      case "call.state":
        this.state = event.state;
        break;
      case "participant.joined":
        this.lane(who);
        break;
      case "speech.started":
      case "speech.stopped":
        this.lane(who).speaking(event.type === "speech.started");
        break;
      case "transcript.delta":
        this.lane(who).partial(event.text);
        break;
      case "transcript.completed":
        this.final(who, event);
        break;
      case "transcript.failed":
        this.lane(who).add(`${event.item_id}-failed`, event.time, `(not transcribed: ${event.message})`, "failed");
        break;
      case "dtmf":
        this.lane(who).add(`dtmf-${event.seq}`, event.time, `DTMF ${event.tone}`, "dtmf");
        break;
      case "response.text":
        this.lane(KOE).add(`${event.response_id}-${event.seq}`, event.time, event.text, "reply");
        break;
      case "barge_in":
        this.lane(KOE).add(`barge-${event.seq}`, event.time, `interrupted after ${formatMs(event.played_ms)}`, "tag");
        break;
      case "acs.callback":
        this.info.last_callback = event.event;
        break;
      case "error":
        this.problem.textContent = `${event.code || "error"}: ${event.message || ""}`;
        break;
      case "call.ended":
        this.state = "ended";
        for (const lane of this.lanes.values()) lane.speaking(false);
        break;
      default:
        return;
    }
    this.render();
  }

  final(who, entry) {
    this.lane(who).add(entry.item_id, entry.time, entry.text, "final");
    this.lane(who).partial("");
  }

  lane(who) {
    const key = who === null || who === undefined ? MIXED : who;
    let lane = this.lanes.get(key);
    if (!lane) {
      lane = new Lane(key);
      this.lanes.set(key, lane);
      // koe's own lane goes last, after the people on the call.
      const koeLane = this.lanes.get(KOE);
      if (koeLane && key !== KOE) this.laneBox.insertBefore(lane.node, koeLane.node);
      else this.laneBox.append(lane.node);
    }
    return lane;
  }

  render() {
    this.badge.textContent = this.state;
    this.badge.dataset.state = this.state;
    this.node.dataset.state = this.state;
    const people = [...this.lanes.keys()].filter((key) => key !== KOE).length;
    const parts = [this.door.toUpperCase(), this.mode];
    if (this.startedAt) parts.push(`since ${clock(this.startedAt)}`);
    if (this.holder) parts.push(`on ${this.holder}`);
    parts.push(`${people} participant${people === 1 ? "" : "s"}`);
    if (this.info.media_streaming) parts.push(`media streaming ${this.info.media_streaming}`);
    this.meta.textContent = parts.filter(Boolean).join(" · ");
    this.renderActions();
  }

  renderActions() {
    if (this.door !== "acs" || this.state === "ended") {
      this.actions.replaceChildren();
      return;
    }
    if (this.actions.childElementCount) return;
    const button = (action, label) => {
      const node = el("button", { type: "button", dataset: { action } }, label);
      node.addEventListener("click", () => this.control(action, node));
      return node;
    };
    this.actions.append(button("start", "Start streaming"), button("stop", "Stop streaming"));
  }

  async control(action, button) {
    button.disabled = true;
    this.problem.textContent = "";
    try {
      await this.onControl(this.id, action);
      this.problem.textContent = `${action === "start" ? "Start" : "Stop"} streaming requested.`;
    } catch (error) {
      this.problem.textContent = `Could not ${action} streaming: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  }
}

class Lane {
  constructor(who) {
    this.items = new Set();
    this.list = el("ol");
    this.partialNode = el("li", { class: "partial", hidden: "" });
    this.list.append(this.partialNode);
    this.node = el(
      "section",
      { class: "lane", dataset: { participant: who } },
      el("h4", {}, el("span", { class: "speaking", title: "speaking" }), who),
      this.list,
    );
  }

  add(key, time, text, kind) {
    if (this.items.has(key)) return;
    this.items.add(key);
    const entry = el(
      "li",
      { class: kind, dataset: { item: key } },
      el("time", {}, time ? clock(time) : ""),
      text || "",
    );
    this.list.insertBefore(entry, this.partialNode);
    while (this.list.childElementCount > MAX_ENTRIES + 1) this.list.firstElementChild.remove();
    this.list.scrollTop = this.list.scrollHeight;
  }

  partial(text) {
    this.partialNode.textContent = text ? `${text} …` : "";
    this.partialNode.hidden = !text;
    if (text) this.list.scrollTop = this.list.scrollHeight;
  }

  speaking(yes) {
    this.node.classList.toggle("speaking", Boolean(yes));
  }
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
}
