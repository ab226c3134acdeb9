// The microphone side of the voice console, on the audio thread: mono mix, resampling to 24 kHz, PCM16 (little
// endian) in 40 ms chunks, and the level of each chunk for the meter. The main thread only base64-encodes and sends.

import { Resampler } from "./resampler.js";

const TARGET_RATE = 24000; // the Realtime API's audio/pcm rate
const CHUNK_MS = 40; // within the 20–100 ms per input_audio_buffer.append that clients are expected to send
const CHUNK_SAMPLES = (TARGET_RATE * CHUNK_MS) / 1000;

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.resampler = new Resampler(sampleRate, TARGET_RATE);
    this.pending = new Int16Array(CHUNK_SAMPLES);
    this.filled = 0;
    this.sumSquares = 0;
    this.peak = 0;
    this.enabled = true;
    this.port.onmessage = (event) => {
      if (event.data?.type === "enable") this.enabled = event.data.value;
    };
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true; // no input connected yet
    const frames = channels[0].length;
    const mono = channels.length === 1 ? channels[0] : mixDown(channels, frames);
    if (this.enabled) this.take(this.resampler.push(mono));
    return true;
  }

  take(samples) {
    for (let i = 0; i < samples.length; i++) {
      const s = Math.max(-1, Math.min(1, samples[i]));
      this.sumSquares += s * s;
      this.peak = Math.max(this.peak, Math.abs(s));
      this.pending[this.filled++] = s < 0 ? Math.round(s * 0x8000) : Math.round(s * 0x7fff);
      if (this.filled === CHUNK_SAMPLES) this.flush();
    }
  }

  flush() {
    const bytes = new Uint8Array(CHUNK_SAMPLES * 2);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < CHUNK_SAMPLES; i++) view.setInt16(i * 2, this.pending[i], true);
    const rms = Math.sqrt(this.sumSquares / CHUNK_SAMPLES);
    this.port.postMessage({ type: "chunk", pcm: bytes.buffer, rms, peak: this.peak }, [bytes.buffer]);
    this.filled = 0;
    this.sumSquares = 0;
    this.peak = 0;
  }
}

function mixDown(channels, frames) {
  const out = new Float32Array(frames);
  for (const channel of channels) for (let i = 0; i < frames; i++) out[i] += channel[i] / channels.length;
  return out;
}

registerProcessor("koe-capture", CaptureProcessor);
