"""The session's replies: the reply machine's actions, the running response, barge-in and latency reports.

`Replies.input(event)` feeds the reply table (`koe.voice.turns.REPLY_TABLE`) and carries out its actions: start a
response (adopting the held one a speculation prepared, when the turn it answered is the one that just ended),
reject an overlapping request, cancel, or flush what the listener has not heard yet. It also paces live audio and
reports each reply's `ResponseTiming` when its first output leaves.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from koe.voice import events as ev
from koe.voice.config import ResponseOptions
from koe.voice.participant import TurnTiming
from koe.voice.planning import plan_response
from koe.voice.response import ResponseRun
from koe.voice.speculation import Speculation
from koe.voice.turns import Reply, ReplyAction, ReplyInput, ReplyMachine

if TYPE_CHECKING:
    from koe.voice.session import Session

OUTPUT_LEAD_MS = 400
"""How far reply audio may run ahead of the listener's playback: enough to ride out network jitter, short enough
that a barge-in leaves little already-sent audio behind."""


class Replies:
    def __init__(self, session: Session) -> None:
        self._session = session
        self._machine = ReplyMachine()
        self.run: ResponseRun | None = None
        self._task: asyncio.Task[None] | None = None
        self._options: ResponseOptions | None = None
        self.adoptable: Speculation | None = None
        """A committed turn's speculation whose held reply the next automatic response may take over."""
        self._timing_for: tuple[ResponseRun, TurnTiming | None] | None = None

    @property
    def idle(self) -> bool:
        return self._machine.state is Reply.IDLE

    def request(self, options: ResponseOptions | None, replace_active: bool) -> None:
        self._options = options
        self.input(ReplyInput.CREATE_REPLACING if replace_active else ReplyInput.CREATE)

    def input(self, event: ReplyInput) -> None:
        session = self._session
        for action in self._machine.feed(event):
            if action is ReplyAction.START:
                options, self._options = self._options, None
                self._start(options, adopt=event is ReplyInput.AUTO)
            elif action is ReplyAction.REJECT_ACTIVE:
                active = self.run.response_id if self.run else "unknown"
                self._options = None
                session._error(
                    "conversation_already_has_active_response",
                    f"Conversation already has an active response in progress: {active}. Wait until the response "
                    "is finished before creating a new one.",
                )
            elif action is ReplyAction.CANCEL_CLIENT:
                self.cancel("client_cancelled")
            elif action is ReplyAction.CANCEL_TURN:
                self.cancel("turn_detected")
            elif action is ReplyAction.INTERRUPT_PLAYBACK:
                self.interrupt_playback()
            elif action is ReplyAction.ERROR_NOT_ACTIVE:
                session._error("response_cancel_not_active", "Cancellation failed: no active response found")

    def _start(self, options: ResponseOptions | None, adopt: bool) -> None:
        transcripts = self._session.transcripts
        speculation, self.adoptable = self.adoptable, None
        turn, transcripts.last_turn = (transcripts.last_turn if adopt else None), None
        if speculation is not None and not adopt:
            speculation.discard()
            speculation = None
        self.run = None
        self._task = self._session._spawn(self._respond(options, speculation, turn))

    async def _respond(
        self, options: ResponseOptions | None, speculation: Speculation | None, turn: TurnTiming | None
    ) -> None:
        session = self._session
        await session.transcripts.pending()  # the reply answers every turn committed so far
        run = speculation.take_run() if speculation is not None else None
        if run is not None and speculation is not None:
            self.run, self._timing_for, run.pace = run, (run, turn), self._pace
            speculation.release(session._emit)
            await speculation.finish()
        else:
            if speculation is not None:
                speculation.discard()
            plan = plan_response(session, options)
            tts = session.engines.tts if plan.output_audio else None
            run = ResponseRun(plan, session.engines.require("llm"), tts, session._emit)
            self.run, self._timing_for, run.pace = run, (run, turn), self._pace
            await run.run()
        if self.run is run:
            self.input(ReplyInput.FINISHED)

    async def _pace(self) -> None:
        await self._session.playback.wait_below(OUTPUT_LEAD_MS)

    def cancel(self, reason: str) -> None:
        run, task = self.run, self._task
        if run is not None and not run.done:
            run.cancel(reason)
        if task is not None and not task.done():
            task.cancel()
        self._task = None

    def interrupt_playback(self) -> None:
        session = self._session
        if not session.playback.is_playing():
            return
        response_id, item_id, played, dropped = session.playback.interrupt()
        if item_id is None:
            return
        session._emit(ev.AudioInterrupted(response_id, item_id, played, dropped))
        td = session.config.turn_detection
        if td is not None and td.auto_truncate:
            session.truncate(item_id, 0, played)

    def in_conversation(self, response_id: str) -> bool:
        run = self.run
        return run is not None and run.response_id == response_id and run.plan.in_conversation

    def first_output(self, response_id: str) -> ev.ResponseTiming | None:
        """The reply's latency breakdown, the first time one of its outputs (audio or text) leaves."""
        if self._timing_for is None or self._timing_for[0].response_id != response_id:
            return None
        run, turn = self._timing_for
        self._timing_for = None
        now = asyncio.get_running_loop().time()

        def span(start: float | None, end: float | None) -> int | None:
            return None if start is None or end is None else max(0, round((end - start) * 1000))

        return ev.ResponseTiming(
            response_id,
            total_ms=span(turn.voice_end_at if turn else None, now),
            turn_end_ms=span(turn.voice_end_at, turn.turn_end_at) if turn else None,
            stt_ms=turn.stt_ms if turn else None,
            llm_first_token_ms=span(run.llm_started_at, run.first_token_at),
            tts_first_audio_ms=span(run.first_clause_at, run.first_audio_at),
        )
