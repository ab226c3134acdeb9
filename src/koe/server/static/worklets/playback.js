// The speaker side of the voice console, on the audio thread: a queue of 24 kHz reply audio, resampled to the
// device rate and played without gaps, that can be flushed at once on barge-in. It counts what actually reached the
// output, per conversation item, because that is what `conversation.item.truncate` must report.

import { Resampler } from "./resampler.js";

const SOURCE_RATE = 24000; // reply audio arrives as audio/pcm at 24 kHz
const STATUS_EVERY_MS = 50;
const FEED_SAMPLES = 256; // source samples fed to the resampler at a time

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.resampler = new Resampler(SOURCE_RATE, sampleRate);
    this.queue = []; // {item, samples: Float32Array, offset}
    this.queuedSamples = 0; // source samples waiting in `queue`
    this.ready = new Float32Array(0); // resampled output not yet played
    this.readyOwners = []; // [{item, count}] for the samples in `ready`, in order
    this.primed = false; // the resampler holds samples that only a flush brings out
    this.played = new Map(); // item -> output frames played
    this.totalFrames = 0;
    this.lastItem = null;
    this.playing = false;
    this.sinceStatus = 0;
    this.port.onmessage = (event) => this.command(event.data);
  }

  command(message) {
    if (message.type === "push") {
      this.queue.push({ item: message.item, samples: new Float32Array(message.samples), offset: 0 });
      this.queuedSamples += message.samples.byteLength / 4;
    } else if (message.type === "clear") {
      const dropped = this.queuedSamples / SOURCE_RATE + this.ready.length / sampleRate;
      const items = [...new Set([this.lastItem, ...this.queue.map((c) => c.item)])].filter((i) => i !== null);
      this.queue = [];
      this.queuedSamples = 0;
      this.ready = new Float32Array(0);
      this.readyOwners = [];
      this.resampler.reset();
      this.primed = false;
      this.playing = false;
      const played = Object.fromEntries(items.map((item) => [item, this.msOf(item)]));
      this.port.postMessage({ type: "cleared", played, droppedMs: Math.round(dropped * 1000), ...this.totals() });
    }
  }

  msOf(item) {
    return Math.round(((this.played.get(item) || 0) * 1000) / sampleRate);
  }

  totals() {
    return {
      playing: this.playing,
      item: this.lastItem,
      itemPlayedMs: this.lastItem === null ? 0 : this.msOf(this.lastItem),
      totalPlayedMs: Math.round((this.totalFrames * 1000) / sampleRate),
      bufferedMs: Math.round((this.queuedSamples * 1000) / SOURCE_RATE + (this.ready.length * 1000) / sampleRate),
    };
  }

  fill(frames) {
    while (this.ready.length < frames && this.queue.length > 0) {
      const chunk = this.queue[0];
      const take = chunk.samples.subarray(chunk.offset, chunk.offset + FEED_SAMPLES);
      chunk.offset += take.length;
      this.queuedSamples -= take.length;
      if (chunk.offset >= chunk.samples.length) this.queue.shift();
      this.append(this.resampler.push(take), chunk.item);
      this.primed = true;
    }
    if (this.ready.length < frames && this.primed) {
      // Out of audio: flush the resampler's tail (its last few samples wait for right-hand context).
      this.append(this.resampler.push(new Float32Array(2 * this.resampler.half)), null);
      this.primed = false;
    }
  }

  append(samples, item) {
    if (samples.length === 0) return;
    const joined = new Float32Array(this.ready.length + samples.length);
    joined.set(this.ready);
    joined.set(samples, this.ready.length);
    this.ready = joined;
    const last = this.readyOwners[this.readyOwners.length - 1];
    if (last && last.item === item) last.count += samples.length;
    else this.readyOwners.push({ item, count: samples.length });
  }

  process(_inputs, outputs) {
    const output = outputs[0];
    const frames = output[0].length;
    this.fill(frames);
    const n = Math.min(frames, this.ready.length);
    for (const channel of output) {
      channel.set(this.ready.subarray(0, n));
      channel.fill(0, n);
    }
    this.ready = this.ready.subarray(n);
    this.account(n);
    const wasPlaying = this.playing;
    this.playing = n > 0 || this.queue.length > 0;
    this.sinceStatus += (frames * 1000) / sampleRate;
    if (wasPlaying !== this.playing || (this.playing && this.sinceStatus >= STATUS_EVERY_MS)) {
      this.sinceStatus = 0;
      this.port.postMessage({ type: "status", ...this.totals() });
    }
    return true;
  }

  account(frames) {
    // Attribute the frames just played to the items they came from (the flushed tail belongs to no item).
    let left = frames;
    while (left > 0 && this.readyOwners.length > 0) {
      const owner = this.readyOwners[0];
      const used = Math.min(left, owner.count);
      if (owner.item !== null) {
        this.played.set(owner.item, (this.played.get(owner.item) || 0) + used);
        this.totalFrames += used;
        this.lastItem = owner.item;
      }
      owner.count -= used;
      left -= used;
      if (owner.count === 0) this.readyOwners.shift();
    }
  }
}

registerProcessor("koe-playback", PlaybackProcessor);
