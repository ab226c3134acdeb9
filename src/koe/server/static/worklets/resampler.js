// A streaming windowed-sinc resampler, shared by the capture and playback worklets.
//
// Why not let the browser resample: an AudioContext at 24 kHz would, but Firefox refuses to connect a microphone
// to a context whose rate differs from the device's, so koe's pages run the context at the device rate and convert
// here. Speech only needs the band below 12 kHz, so a short kernel (32 taps at the lower rate) is plenty.

const HALF_TAPS = 16; // kernel half-width, in samples of the lower of the two rates
const TABLE_STEPS = 256; // kernel table resolution: entries per input sample
const PASSBAND = 0.92; // cutoff as a fraction of the lower Nyquist frequency; leaves room for the transition band

export class Resampler {
  constructor(fromRate, toRate) {
    this.fromRate = fromRate;
    this.toRate = toRate;
    this.step = fromRate / toRate; // input samples per output sample
    this.identity = fromRate === toRate;
    const scale = Math.min(1, toRate / fromRate);
    this.cutoff = PASSBAND * scale; // cycles per input sample, times 2
    this.half = Math.ceil(HALF_TAPS / scale); // kernel half-width in input samples
    this.table = buildKernel(this.half, this.cutoff);
    this.reset();
  }

  reset() {
    // The buffer starts with `half` zeros of history so the first output sample has left context.
    this.buffer = new Float32Array(Math.max(4096, 4 * this.half));
    this.length = this.half;
    this.position = this.half; // read position (fractional) in `buffer`
  }

  // Feed input samples; returns the output samples that are ready (the last `half` inputs wait for right context).
  push(input) {
    if (this.identity) return Float32Array.from(input);
    this.append(input);
    const ready = Math.max(0, Math.ceil((this.length - this.half - this.position) / this.step));
    const out = new Float32Array(ready);
    const { table, half, buffer } = this;
    let t = this.position;
    for (let n = 0; n < ready; n++, t += this.step) {
      const centre = Math.floor(t);
      const frac = t - centre;
      let acc = 0;
      for (let k = -half + 1; k <= half; k++) {
        const d = Math.abs(k - frac) * TABLE_STEPS; // distance from t, in table steps
        const i = d | 0;
        const w = i + 1 < table.length ? table[i] + (table[i + 1] - table[i]) * (d - i) : 0;
        acc += buffer[centre + k] * w;
      }
      out[n] = acc;
    }
    this.position = t;
    this.discard();
    return out;
  }

  append(input) {
    if (this.length + input.length > this.buffer.length) {
      const grown = new Float32Array(Math.max(this.buffer.length * 2, this.length + input.length));
      grown.set(this.buffer.subarray(0, this.length));
      this.buffer = grown;
    }
    this.buffer.set(input, this.length);
    this.length += input.length;
  }

  discard() {
    // Keep only the history the next output sample needs.
    const keepFrom = Math.floor(this.position) - this.half;
    if (keepFrom <= 0) return;
    this.buffer.copyWithin(0, keepFrom, this.length);
    this.length -= keepFrom;
    this.position -= keepFrom;
  }
}

function buildKernel(half, cutoff) {
  // h(d) = cutoff · sinc(cutoff · d) · Blackman window, for d = 0 … half, sampled TABLE_STEPS times per sample.
  const size = half * TABLE_STEPS + 2;
  const table = new Float32Array(size);
  for (let i = 0; i < size; i++) {
    const d = i / TABLE_STEPS;
    if (d >= half) break;
    const x = Math.PI * cutoff * d;
    const sinc = d === 0 ? 1 : Math.sin(x) / x;
    const r = d / half; // 0 at the centre, 1 at the edge
    const window = 0.42 + 0.5 * Math.cos(Math.PI * r) + 0.08 * Math.cos(2 * Math.PI * r);
    table[i] = cutoff * sinc * window;
  }
  return table;
}
