"""`koe bench latency`'s ACS run: the same spoken turns on an ACS media stream in agent mode, as a phone call has
them (`/acs/media?mode=agent`, 16 kHz mixed PCM, one `AudioData` frame every 20 ms, silent frames between).

Measured from the caller's side, as the ACS platform sees it:
- response latency: from the last voiced frame sent to the first outbound `AudioData` of the reply;
- barge-in latency, on every other turn: from the first voiced frame of speech sent over the playing reply to the
  `StopAudio` that flushes it (what ACS acts on: it drops the audio it has queued at once).
ACS carries no per-stage report, so this run has no waterfall; the Voice Live runs give koe's stages. Turn detection
is the ACS door's own, `acs.silence_duration_ms` of the server's config (reported with the run).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from koe.bench._turns import (
    INTERRUPT_AFTER_S,
    LEAD_S,
    Loudspeaker,
    Microphone,
    Progress,
    Turn,
    Utterance,
    load_utterances,
)
from koe.protocols.acs import AudioData, AudioMetadata, encode, iso_timestamp
from koe.protocols.acs_outbound import OutboundAudioData, StopAudio, parse_outbound
from koe.tasks import stop, within

RATE = 16000
FRAME = RATE // 50
NEW_REPLY_GAP_S = 0.3
"""Outbound audio after this long without any (or after a `StopAudio`) starts a new reply: koe paces a reply with no
gaps between its clauses, so a gap this long is between replies."""
REPLY_ENDED_S = 1.0
"""No outbound audio for this long: the reply has ended."""
WAIT_S = 60.0


@dataclass
class _Heard:
    at: float
    audio: bool
    """True for outbound audio, False for a `StopAudio`."""


class _Caller:
    """The call's microphone and loudspeaker: paced `AudioData` out, timestamped outbound messages in."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.heard: asyncio.Queue[_Heard] = asyncio.Queue()
        self.speaker = Loudspeaker(RATE)
        self.microphone = Microphone(self.speaker)
        self.last_audio_at = 0.0
        self.held: list[_Heard] = []
        """Messages read ahead (a new reply's first audio, found while waiting for a StopAudio), read again first."""
        self._epoch = time.time()
        self._silence = bytes(FRAME * 2)

    async def mic(self) -> None:
        await self.microphone.run(self._send)

    async def _send(self, pcm: bytes | None, number: int) -> None:
        stamp = iso_timestamp(self._epoch + number * 0.02)
        await self.ws.send(encode(AudioData(pcm or self._silence, stamp, silent=pcm is None)))

    async def ears(self) -> None:
        async for raw in self.ws:
            message = parse_outbound(raw)
            now = time.perf_counter()
            if isinstance(message, OutboundAudioData):
                self.speaker.play(message.data, now)
                self.heard.put_nowait(_Heard(now, True))
            elif isinstance(message, StopAudio):
                self.speaker.flush(now)
                self.microphone.heard_speech(now)
                self.heard.put_nowait(_Heard(now, False))

    def say(self, utterance: Utterance) -> tuple[asyncio.Future[float], asyncio.Future[float]]:
        return self.microphone.say(utterance)

    async def next(self, timeout_s: float = WAIT_S) -> _Heard:
        if self.held:
            return self.held.pop(0)
        return await within(self.heard.get(), timeout_s)

    async def reply_start(self, after: float) -> float:
        """When the first audio of a reply that began after `after` arrived."""
        fresh = False
        previous = self.last_audio_at
        while True:
            heard = await self.next()
            if not heard.audio:
                fresh = True  # whatever comes next is a new reply
                continue
            starts = fresh or heard.at - previous >= NEW_REPLY_GAP_S
            previous = self.last_audio_at = heard.at
            if starts and heard.at >= after:
                return heard.at
            fresh = False

    async def stop_audio(self, onset: float) -> float | None:
        """When the `StopAudio` for speech that began at `onset` arrived; None if none came because nothing was
        playing (the next reply began instead, or nothing at all came for `REPLY_ENDED_S` after the onset)."""
        while True:
            try:
                heard = await self.next(max(0.01, onset + REPLY_ENDED_S + WAIT_S / 10 - time.perf_counter()))
            except TimeoutError:
                return None
            if not heard.audio:
                return heard.at
            if heard.at > onset and heard.at - self.last_audio_at >= NEW_REPLY_GAP_S:
                self.held.append(heard)  # the start of the next reply: nothing was stopped
                return None
            self.last_audio_at = heard.at

    async def reply_end(self) -> None:
        """Wait until no audio has come for `REPLY_ENDED_S`."""
        while True:
            try:
                heard = await self.next(REPLY_ENDED_S)
            except TimeoutError:
                return
            if heard.audio:
                self.last_audio_at = heard.at


async def run_acs_turns(base: str, turns: int, say: Progress, call_id: str = "bench-latency") -> list[Turn]:
    """Play `turns` turns into koe's ACS door in agent mode at `base` (ws://host:port)."""
    from websockets.asyncio.client import connect

    utterances = load_utterances(RATE)
    results: list[Turn] = []
    url = f"{base}/acs/media?mode=agent"
    headers = {"x-ms-call-connection-id": call_id}
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        caller = _Caller(ws)
        await ws.send(encode(AudioMetadata(call_id, RATE)))
        tasks = [asyncio.create_task(caller.mic()), asyncio.create_task(caller.ears())]
        try:
            await asyncio.sleep(LEAD_S)
            pending: tuple[asyncio.Future[float], asyncio.Future[float]] | None = None
            for index in range(turns):
                utterance = utterances[index % len(utterances)]
                turn = Turn(utterance.name)
                false_starts = caller.microphone.false_starts
                _, last = pending if pending is not None else caller.say(utterance)
                pending = None
                last_voiced_at = await last
                first_audio_at = await caller.reply_start(last_voiced_at)
                turn.latency_ms = (first_audio_at - last_voiced_at) * 1000
                if index % 2 == 1 and index + 1 < turns:
                    interrupting = utterances[(index + 1) % len(utterances)]
                    await asyncio.sleep(max(0.0, INTERRUPT_AFTER_S - interrupting.first_voiced * 0.02))
                    pending = caller.say(interrupting)
                    onset = await pending[0]
                    stopped_at = await caller.stop_audio(onset)
                    # A reply that had ended before the caller spoke had nothing to stop: no figure, not 0 ms.
                    turn.reply_sent_before_onset = stopped_at is None
                    turn.barge_in_ms = (stopped_at - onset) * 1000 if stopped_at is not None else None
                else:
                    await caller.reply_end()
                    await asyncio.sleep(1.0)  # the caller listens a moment before speaking again
                turn.false_starts = caller.microphone.false_starts - false_starts
                results.append(turn)
                say(
                    f"acs agent, turn {index + 1}/{turns} ({utterance.name}): response {turn.latency_ms:.0f} ms"
                    + (f", barge-in {turn.barge_in_ms:.0f} ms" if turn.barge_in_ms is not None else "")
                )
        finally:
            for task in tasks:
                await stop(task, ignore_failure=True)
    return results
