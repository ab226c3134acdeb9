"""The ACS door's engine modes: `transcribe` (a transcript per participant and turn) and `agent` (koe answers the
call with its own voice), both on one `koe.voice.session.Session` per media connection.

Built by `koe.server.acs.modes.MODES`. Each `participantRawID` of an unmixed stream is its own input pipeline in
the session (mixed streams are one, with participant None). Engine events become registry events (see
`koe.server.calls.registry`); in agent mode reply audio goes out as `AudioData` at the stream's rate, an interruption
sends `StopAudio` at once, and the keys the caller presses become user text items (`koe.server.acs.modes.dtmf`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import numpy as np

from koe.audio.resample import resample
from koe.engines.base import EngineUnavailable
from koe.engines.registry import EngineKind
from koe.protocols.acs import AudioData, DtmfData, frame_bytes
from koe.server.acs.modes.base import ModeContext, ModeUnavailable
from koe.server.acs.modes.dtmf import DtmfCollector
from koe.server.calls.events import call_event
from koe.server.metrics import METRICS
from koe.tasks import within
from koe.voice import events as ev
from koe.voice.config import SessionConfig, TurnDetection
from koe.voice.conversation import Item, Part, new_id
from koe.voice.session import Session, SessionClosed

log = logging.getLogger("koe.server.acs.door")

DRAIN_TIMEOUT_S = 30.0
"""How long a hung-up call may take to deliver the final transcript of the turn in progress."""


class _EnginePipeline:
    mode = "transcribe"

    def __init__(self, context: ModeContext) -> None:
        self.context = context
        try:
            for kind in self.engines_needed():
                context.engines.require(kind)
        except EngineUnavailable as exc:
            raise ModeUnavailable(str(exc)) from exc
        self.observed = METRICS.session("acs")
        self.session = Session(
            context.engines,
            self.session_config(),
            default_instructions=context.settings.llm.system_prompt,
            session_id=context.call_id,
            observer=self.observed,
            limits=context.limits,
            turn_tokens=context.settings.llm.spoken_turn_tokens,
        )
        self._silence = np.zeros(frame_bytes(context.rate) // 2, dtype=np.int16)
        self._pump: asyncio.Task[None] | None = None

    def engines_needed(self) -> tuple[EngineKind, ...]:
        return ("vad", "stt")

    def session_config(self) -> SessionConfig:
        acs = self.context.settings.acs
        turns = TurnDetection(type="server_vad", silence_duration_ms=acs.silence_duration_ms)
        return SessionConfig(
            mode="transcribe",
            language=self.context.language,
            turn_detection=turns,
            partial_results=acs.partial_results,
            echo_cancellation=False,
        )

    async def start(self) -> None:
        self._pump = asyncio.create_task(self._events(), name=f"acs-{self.mode}-{self.context.call_id}")

    def audio(self, frame: AudioData) -> None:
        # An empty silent frame still advances the participant's timeline, so turns end on time.
        pcm = np.frombuffer(frame.data, dtype="<i2") if frame.data else self._silence
        try:
            self.session.append_audio(pcm, self.context.rate, participant=frame.participant_raw_id)
        except (SessionClosed, ValueError) as exc:  # a 17th speaker, or audio after the end
            log.warning("audio from %s not used: %s", frame.participant_raw_id, exc)

    def dtmf(self, frame: DtmfData) -> None:
        return None

    async def finish(self, hung_up: bool) -> None:
        try:
            await within(self.session.end_input(), DRAIN_TIMEOUT_S)
        except TimeoutError:
            log.warning("the last turn of call %s took too long to finish; dropped", self.context.call_id)
        finally:
            self.observed.close()
            await self.session.close()
            if self._pump is not None:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await within(self._pump, 5.0)

    async def _events(self) -> None:
        async for event in self.session.events():
            self.on_event(event)

    def on_event(self, event: ev.Event) -> None:
        rendered = call_event(event)
        if rendered is not None:
            self.context.publish(rendered)


class TranscribePipeline(_EnginePipeline):
    mode = "transcribe"


class AgentPipeline(_EnginePipeline):
    """koe answers: reply audio goes out at the stream's rate; being interrupted flushes it with `StopAudio`."""

    mode = "agent"
    _unflushed = False
    _dtmf: DtmfCollector | None = None

    def engines_needed(self) -> tuple[EngineKind, ...]:
        return ("vad", "stt", "llm", "tts")

    def session_config(self) -> SessionConfig:
        base = super().session_config()
        audio = self.context.settings.audio
        turns = TurnDetection(
            type="server_vad", silence_duration_ms=self.context.settings.acs.silence_duration_ms, auto_truncate=True
        )
        return SessionConfig(
            mode="converse",
            language=base.language,
            turn_detection=turns,
            partial_results=base.partial_results,
            echo_cancellation=audio.echo_cancellation,
            noise_suppression=audio.noise_suppression,
            output_rate=self.context.rate,
        )

    async def _finish(self, hung_up: bool) -> None:
        if hung_up:
            # Nobody is left to hear a reply: abandon generation at once and free the session.
            self.observed.close()
            await self.session.close()
            if self._pump is not None:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await within(self._pump, 5.0)
            return
        await super().finish(hung_up)

    async def start(self) -> None:
        acs = self.context.settings.acs
        if acs.dtmf != "ignore":
            self._dtmf = DtmfCollector(acs.dtmf_timeout_ms / 1000, self._keys_pressed)
        await super().start()

    def dtmf(self, frame: DtmfData) -> None:
        if self._dtmf is not None and not self._dtmf.press(frame.data):
            log.warning("DTMF tone %r names no key; not given to the agent", frame.data[:16])

    def _keys_pressed(self, text: str) -> None:
        """The caller's keys, as a user text item (`koe.server.acs.modes.dtmf`); answered with `acs.dtmf = "reply"`."""
        item = Item(new_id("item"), role="user", content=(Part("input_text", text=text),))
        log.info("caller pressed keys: %s", text)
        self.session.create_item(item)
        if self.context.settings.acs.dtmf != "reply":
            return
        if self._unflushed:  # the caller keyed over koe's reply: flush it, as a barge-in does
            self.context.writer.stop_audio()
            self._unflushed = False
        self.session.create_response(replace_active=True)

    async def finish(self, hung_up: bool) -> None:
        if self._dtmf is not None:
            self._dtmf.close()
        await self._finish(hung_up)

    def on_event(self, event: ev.Event) -> None:
        writer = self.context.writer
        if isinstance(event, ev.ResponseAudioDelta):
            pcm = np.asarray(event.pcm, dtype="<i2")
            if event.rate != self.context.rate:
                pcm = resample(pcm, event.rate, self.context.rate).astype("<i2")
            writer.audio(pcm.tobytes())
            self._unflushed = True
            return
        interrupted = isinstance(event, ev.AudioInterrupted) or (
            isinstance(event, ev.ResponseDone) and event.status == "cancelled" and event.reason == "turn_detected"
        )
        if interrupted and self._unflushed:
            writer.stop_audio()
            self._unflushed = False
        super().on_event(event)
