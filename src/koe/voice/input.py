"""One participant's input path: resampling, echo cancellation, noise suppression, VAD and turn timing.

`ParticipantInput.push()` takes audio as it arrives from the wire and returns the turn signals it caused, each
stamped with its time on this participant's input timeline. All of it is per-frame work that costs well under a
millisecond, so it runs on the event loop. The audio of the current turn is kept (from the onset minus the prefix
padding) until the session commits or clears it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from koe.audio.pcm import ENGINE_RATE, Pcm, Reframer, check_rate
from koe.audio.resample import SteadyResampler
from koe.engines.base import VADStream
from koe.voice.config import TurnDetection
from koe.voice.turns import TurnInput

WINDOW_SAMPLES = 512
WINDOW_MS = WINDOW_SAMPLES * 1000 // ENGINE_RATE
VOICE_END_MS = 64
"""Silence after speech before the turn counts as paused (and speculative transcription starts)."""
ONSET_GRACE_MS = 3 * WINDOW_MS
"""A possible onset (`SpeechDetector.onset_pending`) outlives its last voiced window by this much: the gaps between a
talker's first syllables do not end it."""
HYSTERESIS = 0.15
"""Once speaking, or once a possible onset has begun, a window counts as silence only below `threshold -
HYSTERESIS` (Silero's own recommendation)."""
MAX_TURN_MS = 60_000
"""A turn that runs this long is ended, so one unbroken stream cannot grow a buffer without bound."""
GEIGEL_RATIO = 0.5
"""Geigel's double-talk test: input that peaks above this fraction of the played audio's recent peak may be the
caller (an echo path returns less than half of what it plays); below it, while the echo canceller still lets echo
through, it is taken for echo."""
ECHO_TAIL_MS = 240
"""How far back the played audio is looked at for that peak: the longest echo delay the test allows for."""
RESIDUAL_ECHO_DB = -30.0
"""The echo canceller has learnt the echo path (or there is no echo) once what it lets through of the played audio
is this far below it: the VAD does not hear speech that quiet."""
RESIDUAL_DECAY = 0.9
"""Per chunk (about 20 ms): the residual echo's measure follows the last few hundred ms."""
FAR_ACTIVE_PEAK = 330
"""Played audio that peaks below this (about -40 dBFS) is silence: it leaves no echo to mistake for the caller."""
ECHO_TAIL_SAMPLES = ECHO_TAIL_MS * ENGINE_RATE // 1000
NEAR_WINDOW_MS = 120
"""The caller's peak is taken over this long: a talker's peaks come every syllable, and with the far end's window
`ECHO_TAIL_MS` longer, an echo delayed by up to 120 ms still finds its source's peak there."""
NEAR_WINDOW_SAMPLES = NEAR_WINDOW_MS * ENGINE_RATE // 1000
ECHO_MEASURE_MS = 200
"""The residual echo is judged over at least this much played audio, once the echo has had time to arrive."""
ECHO_MEASURE_SAMPLES = ECHO_MEASURE_MS * ENGINE_RATE // 1000
ECHO_REARM_MS = 1000
"""Played audio silent this long ends a reply: the next one is measured again."""
ECHO_REARM_SAMPLES = ECHO_REARM_MS * ENGINE_RATE // 1000
CLOCK_WINDOW_S = 2.0
"""The input clock's start is the least delayed chunk's over this long (a 100 ppm clock drifts 0.2 ms in it)."""
CLOCK_RESYNC_S = 0.1
"""A chunk this much later than the input clock expects starts the clock again: the sender paused, or lost audio."""


@dataclass(frozen=True, slots=True)
class Signal:
    input: TurnInput
    at_ms: int


class SpeechDetector:
    """Turns a stream of speech probabilities, one per 32 ms window, into turn signals."""

    def __init__(self, config: TurnDetection | None) -> None:
        self.config = config
        self.end_wait_ms: Callable[[int], int | None] = lambda _silence_ms: (
            config.silence_duration_ms if config else None
        )
        """How long the pause must last to end the turn, given the silence so far; None: not decided yet."""
        self._voiced_ms = 0
        self._silent_ms = 0
        self._speaking = False
        self._paused = False
        self._speech_ms = 0
        self._candidate_onset = 0
        self.onset_ms = 0
        self.last_voice_ms = 0
        self._idle_ms = 0
        self._now_ms = 0
        self._heard_ms = -ONSET_GRACE_MS
        """The end of the last voiced window before an onset."""

    def reset(self) -> None:
        self._voiced_ms = self._silent_ms = self._speech_ms = self._idle_ms = 0
        self._speaking = self._paused = False
        self._heard_ms = -ONSET_GRACE_MS

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def onset_pending(self) -> bool:
        """An audible voiced window came within `ONSET_GRACE_MS`, but no onset yet: maybe the caller starting to
        speak (the onset needs `speech_duration_ms` of voice without a break), maybe a blip. A window that Geigel's
        test takes for possible echo never counts, even once the canceller removes the echo: holding a reply on its
        own residual echo would stall it."""
        return not self._speaking and self._now_ms - self._heard_ms < ONSET_GRACE_MS

    def window(
        self, probability: float, end_ms: int, idle_allowed: bool, audible: bool = True, echo: bool = False
    ) -> list[Signal]:
        """One window's speech probability. `audible`: the window's audio is loud enough to be the caller over
        what is playing (`EchoGate.quiet`); only such a window makes an onset pending. `echo`: Geigel's test takes
        the window for echo the canceller may still let through (`EchoGate.echo_only`), so it cannot begin an
        onset, nor count towards one; but it does not break one that audible windows began. A caller's first
        syllables over a loud reply are not all louder than half of what plays (traced: "Please book…" 0.8 s into
        a reply), and taking each such window for silence restarted the `speech_duration_ms` count: that barge-in
        was heard 520 ms after its onset, and is now heard at 360 (220 with no gate at all). Counting such windows
        as voice found it 80 ms sooner offline, but ACS's 64 ms onset then had 8 and 12 false starts in 12 bench
        turns (1-4 before; 6 with this rule: the figure is noisy)."""
        config = self.config
        if config is None:
            return []
        signals: list[Signal] = []
        start_ms = end_ms - WINDOW_MS
        # Once a window has passed the threshold, the next ones need only pass it less the hysteresis, as in speech:
        # a dip between a talker's first syllables (the echo canceller's output has them) does not restart the
        # `speech_duration_ms` count.
        threshold = config.threshold - (HYSTERESIS if self._speaking or self._voiced_ms else 0.0)
        self._now_ms = end_ms
        if echo and not self._speaking:
            if self._voiced_ms and probability >= threshold:
                return []  # neither voice nor a break: it keeps an onset that audible windows began, adds nothing
            probability = 0.0
        if probability >= threshold:
            if not self._speaking and audible:
                self._heard_ms = end_ms
            if not self._voiced_ms:
                self._candidate_onset = start_ms
            self._voiced_ms += WINDOW_MS
            self._silent_ms = 0
            self._idle_ms = 0
            if not self._speaking and self._voiced_ms >= max(config.speech_duration_ms, WINDOW_MS):
                self._speaking = True
                self._speech_ms = self._voiced_ms
                self.onset_ms = self._candidate_onset
                signals.append(Signal(TurnInput.VOICE_START, self.onset_ms))
            elif self._paused and self._voiced_ms >= WINDOW_MS * 2:
                self._paused = False
                signals.append(Signal(TurnInput.VOICE_START, start_ms))
            if self._speaking and not self._paused:
                self.last_voice_ms = end_ms
                self._speech_ms += WINDOW_MS
            return signals + self._limit(end_ms)
        self._voiced_ms = 0
        if not self._speaking:
            self._idle_ms += WINDOW_MS
            if config.idle_timeout_ms and idle_allowed and self._idle_ms >= config.idle_timeout_ms:
                self._idle_ms = 0
                signals.append(Signal(TurnInput.IDLE_TIMEOUT, end_ms))
            return signals
        self._silent_ms += WINDOW_MS
        if not self._paused and self._silent_ms >= min(VOICE_END_MS, config.silence_duration_ms):
            self._paused = True
            signals.append(Signal(TurnInput.VOICE_END, self.last_voice_ms))
        if self._paused:
            wait = self.end_wait_ms(self._silent_ms)
            if wait is not None and self._silent_ms >= wait:
                signals.append(Signal(TurnInput.TURN_END, end_ms))
                self.reset()
        return signals

    def _limit(self, end_ms: int) -> list[Signal]:
        if self._speech_ms < MAX_TURN_MS:
            return []
        self.reset()
        return [Signal(TurnInput.COMMIT, end_ms)]


class EchoGate:
    """Keeps the echo of a reply from starting a turn while the echo canceller does not yet remove it.

    While the reply plays, each chunk of the caller's audio that peaks below `GEIGEL_RATIO` of what played over the
    last `ECHO_TAIL_MS` is echo or silence (Geigel's double-talk test). Over those chunks, once the reply has played
    for a whole tail (its echo has arrived), the gate measures what the canceller lets through against what played.
    Until that residual is below `RESIDUAL_ECHO_DB` over `ECHO_MEASURE_MS` (1-2 s into a reply on the fixtures;
    about 0.5 s when there is no echo, as with a phone's own canceller), the VAD's verdict on such a chunk cannot begin
    speech: otherwise the reply would interrupt itself at its first words. A caller about as loud as the reply at
    the microphone passes at once, and speech already under way is never cut.

    The verdict holds until the far end has been silent for `ECHO_REARM_MS`: a caller speaking softly over the
    reply would otherwise read as echo let through, and close the gate on themselves. Each new reply is measured
    again, as its audio may reach the caller with a different delay."""

    def __init__(self) -> None:
        self._far: deque[tuple[int, int, float]] = deque()
        """The tail's played chunks: (samples, peak, energy)."""
        self._far_samples = 0
        self._near: deque[tuple[int, int]] = deque()
        """The caller's last `NEAR_WINDOW_MS`, as it came: (samples, peak)."""
        self._near_samples = 0
        self._silent_samples = 0
        self._playing_samples = 0
        """Samples since the reply last began to play after a silence longer than the tail."""
        self.quiet = False
        """The last chunk was no louder than the reply's echo could be (Geigel's test), while the reply played."""
        self._candidate: float | None = None
        """The tail's far energy for this chunk's length, when the chunk can only be echo or silence."""
        self._rearm()

    def _rearm(self) -> None:
        self._far_energy = 0.0
        self._residual_energy = 0.0
        self._measured = 0
        self._learnt = False

    def learnt(self) -> bool:
        """Whether the canceller lets through no more than `RESIDUAL_ECHO_DB` of the played audio."""
        if not self._learnt and self._measured >= ECHO_MEASURE_SAMPLES and self._far_energy > 0.0:
            self._learnt = self._residual_energy <= self._far_energy * 10 ** (RESIDUAL_ECHO_DB / 10)
        return self._learnt

    def echo_only(self, near: Pcm, far: Pcm) -> bool:
        """Whether this chunk (`near` as it came, before the canceller) is to be taken for echo; then `cancelled()`
        must be given the canceller's output for it."""
        far_peak = int(np.abs(far).max()) if far.size else 0
        self._far.append((far.size, far_peak, float(np.dot(far, far.astype(np.float64)))))
        self._far_samples += far.size
        while len(self._far) > 1 and self._far_samples - self._far[0][0] >= ECHO_TAIL_SAMPLES:
            self._far_samples -= self._far.popleft()[0]
        self._near.append((near.size, int(np.abs(near).max()) if near.size else 0))
        self._near_samples += near.size
        while len(self._near) > 1 and self._near_samples - self._near[0][0] >= NEAR_WINDOW_SAMPLES:
            self._near_samples -= self._near.popleft()[0]
        recent_far = max(peak for _, peak, _ in self._far)
        if recent_far < FAR_ACTIVE_PEAK:
            self._playing_samples = 0
            self._silent_samples += far.size
            if self._silent_samples >= ECHO_REARM_SAMPLES:
                self._rearm()
            self._candidate = None
            self.quiet = False
            return False
        self._silent_samples = 0
        self._playing_samples += far.size
        self.quiet = quiet = max(peak for _, peak in self._near) < GEIGEL_RATIO * recent_far
        self._candidate = None
        if quiet and self._playing_samples >= ECHO_TAIL_SAMPLES and near.size:  # the echo has had time to arrive
            tail_energy = sum(energy for _, _, energy in self._far)
            self._candidate = tail_energy * near.size / self._far_samples
        return quiet and not self.learnt()

    def cancelled(self, out: Pcm) -> None:
        """The canceller's output for the chunk last given to `echo_only()`."""
        if self._candidate is None:
            return
        self._far_energy = RESIDUAL_DECAY * self._far_energy + self._candidate
        self._residual_energy = RESIDUAL_DECAY * self._residual_energy + float(np.dot(out, out.astype(np.float64)))
        self._measured += out.size
        self._candidate = None


class InputClock:
    """When the caller's audio was captured, on the session's clock, without the network's jitter.

    The echo canceller needs the played audio aligned with the echo in the input to a sample or two; chunks arrive
    a few ms late, each by a different amount (over loopback: p50 2 ms, p90 3-5 ms, up to 60 ms), so a chunk's
    arrival does not say which played audio its echo comes from. The sender captures at a steady rate, so a chunk's
    capture time is the stream's start plus the samples before it. The start is the earliest `arrival - samples
    before / rate` over the last `CLOCK_WINDOW_S` (the least delayed chunk): steady to a fraction of a ms, and it
    follows a sender whose clock runs a little fast or slow. A chunk later than that by over `CLOCK_RESYNC_S` means
    the sender paused or lost audio: the clock starts again from it."""

    def __init__(self) -> None:
        self._origins: deque[tuple[float, float]] = deque()
        """(arrival, observed origin), increasing origins: the window's minimum is the first."""
        self.samples = 0

    def capture_end(self, arrived: float, samples: int) -> float:
        """The capture time of the last of `samples` samples that arrived at `arrived`."""
        self.samples += samples
        observed = arrived - self.samples / ENGINE_RATE
        origins = self._origins
        if origins and observed - origins[0][1] > CLOCK_RESYNC_S:
            origins.clear()
        while origins and origins[-1][1] >= observed:
            origins.pop()
        origins.append((arrived, observed))
        while origins[0][0] < arrived - CLOCK_WINDOW_S:
            origins.popleft()
        return origins[0][1] + self.samples / ENGINE_RATE


class ParticipantInput:
    """The input pipeline of one participant (the only one, for a single-speaker stream)."""

    def __init__(
        self,
        participant: str | None,
        vad: VADStream,
        turn_detection: TurnDetection | None,
        echo: object | None = None,
        denoise: object | None = None,
    ) -> None:
        self.participant = participant
        self._vad = vad
        self.detector = SpeechDetector(turn_detection)
        self.echo = echo
        self.echo_gate = EchoGate()
        """Reset with each new echo canceller (`set_echo`)."""
        self.clock = InputClock()
        self.denoise = denoise
        self._resampler: SteadyResampler | None = None
        """Steady: a 20 ms chunk at any rate gives 320 samples, whole frames for the echo canceller (no lead)."""
        self._windows = Reframer(WINDOW_SAMPLES)
        self.samples = 0
        """Samples received so far, at 16 kHz: the participant's input timeline."""
        self._chunks: list[Pcm] = []
        self._buffered = 0
        self.buffer_start = 0
        """Timeline position (samples) of the first buffered sample."""
        self.item_id: str | None = None
        """The user item the current speech will become (announced at the onset)."""

    @property
    def now_ms(self) -> int:
        return self.samples * 1000 // ENGINE_RATE

    def configure(self, turn_detection: TurnDetection | None) -> None:
        self.detector.config = turn_detection
        self.detector.reset()

    def set_echo(self, echo: object | None) -> None:
        """A new echo canceller (or none), which has learnt nothing yet."""
        self.echo = echo
        self.echo_gate = EchoGate()

    def to_engine_rate(self, pcm: Pcm, rate: int) -> Pcm:
        if rate == ENGINE_RATE:
            return pcm
        if self._resampler is None or self._resampler.src_rate != rate:
            self._resampler = SteadyResampler(check_rate(rate), ENGINE_RATE)
        return self._resampler.process(pcm)

    def push(self, pcm: Pcm, far: Pcm | None = None, idle_allowed: bool = True) -> list[Signal]:
        """Feed 16 kHz audio (already converted); `far` is what was played meanwhile, for the echo canceller."""
        echo_only = quiet = False
        if self.echo is not None and far is not None:
            echo_only = self.echo_gate.echo_only(pcm, far)
            quiet = self.echo_gate.quiet
            pcm = self.echo.process(pcm, far)  # type: ignore[attr-defined]  # koe.audio.echo.EchoCanceller
            self.echo_gate.cancelled(pcm)
        if self.denoise is not None:
            pcm = self.denoise.process(pcm)  # type: ignore[attr-defined]  # koe.audio.denoise.NoiseSuppressor
        self._chunks.append(pcm)
        self._buffered += pcm.size
        signals: list[Signal] = []
        for window in self._windows.push(pcm):
            probability = self._vad.process(window)
            self.samples += WINDOW_SAMPLES
            signals.extend(self.detector.window(probability, self.now_ms, idle_allowed, not quiet, echo_only))
        if self.detector.config is not None and self.item_id is None:
            self._trim(self.detector.config.prefix_padding_ms)
        return signals

    @property
    def delay_samples(self) -> int:
        """How far the audio the VAD sees lags the audio as it arrived, at 16 kHz: the resampler's, echo
        canceller's and noise suppressor's delays."""
        found = self._resampler.delay_samples if self._resampler is not None else 0
        for stage in (self.echo, self.denoise):
            if stage is not None:
                found += int(stage.delay_samples)  # type: ignore[attr-defined]
        return found

    def lag_ms(self, at_ms: int) -> float:
        """How long ago, in audio time, the caller's audio was at `at_ms` on the VAD's timeline: what has arrived
        since (including the part of a window the VAD has not seen yet) plus the pipeline's `delay_samples`."""
        return (self.received_samples + self.delay_samples) * 1000 / ENGINE_RATE - at_ms

    @property
    def received_samples(self) -> int:
        """Every sample pushed, including the part of a window the VAD has not seen yet."""
        return self.buffer_start + self._buffered

    def buffered_ms(self) -> float:
        return self._buffered * 1000.0 / ENGINE_RATE

    def take(self, until_ms: int | None = None) -> tuple[Pcm, int, int]:
        """Remove and return the buffered audio (up to `until_ms` if given), with its start and end ms."""
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        cut = audio.size
        if until_ms is not None:
            cut = max(0, min(audio.size, until_ms * ENGINE_RATE // 1000 - self.buffer_start))
        taken, rest = audio[:cut], audio[cut:]
        start_ms = self.buffer_start * 1000 // ENGINE_RATE
        self.buffer_start += cut
        self._chunks = [rest] if rest.size else []
        self._buffered = rest.size
        return taken, start_ms, self.buffer_start * 1000 // ENGINE_RATE

    def peek(self) -> Pcm:
        """The buffered audio, left in place (for speculative and partial transcription)."""
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, dtype=np.int16)

    def clear(self) -> None:
        self.take()
        self.item_id = None
        self.detector.reset()

    def start_turn_at(self, onset_ms: int, prefix_padding_ms: int) -> int:
        """Drop buffered audio older than the onset minus the padding; return the turn's start in ms."""
        start_ms = max(0, onset_ms - prefix_padding_ms, self.buffer_start * 1000 // ENGINE_RATE)
        self.take(until_ms=start_ms)
        return start_ms

    def _trim(self, keep_ms: int) -> None:
        excess = self._buffered - keep_ms * ENGINE_RATE // 1000 - WINDOW_SAMPLES
        if excess > ENGINE_RATE // 2:  # trim in batches, not on every frame
            self.take(until_ms=(self.buffer_start + excess) * 1000 // ENGINE_RATE)
