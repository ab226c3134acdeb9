"""The session's replies: the reply machine's actions, the running response, barge-in and latency reports.

`Replies.input(event)` feeds the reply table (`koe.voice.turns.REPLY_TABLE`) and carries out its actions: start a
response (adopting the held one a speculation prepared, when the turn it answered is the one that just ended),
reject an overlapping request, cancel, or flush what the listener has not heard yet. `prepare()` builds the held
response a speculation runs. Every response's events leave through `_output()`, which keeps the playback clock and
the conversation up to date, paces live audio, and reports each reply's `ResponseTiming` when its first output
leaves. It sees the session only through its `VoiceContext`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from koe.engines.base import LLM, ChatRequest, EngineError, EngineUnavailable
from koe.voice import events as ev
from koe.voice._context import VoiceContext
from koe.voice.config import ResponseOptions
from koe.voice.errors import NoResponseToCancel, ResponseInProgress
from koe.voice.participant import TurnTiming
from koe.voice.planning import plan_response
from koe.voice.playback import OUTPUT_LEAD_MS
from koe.voice.response import ResponseRun
from koe.voice.speculation import Speculation
from koe.voice.turns import Reply, ReplyAction, ReplyInput, ReplyMachine


class Replies:
    def __init__(self, context: VoiceContext, truncate: Callable[[str, int, int], None]) -> None:
        """`truncate` is the session's command of that name: a barge-in with `auto_truncate` cuts the reply with it."""
        self._context = context
        self._truncate = truncate
        self._machine = ReplyMachine()
        self.run: ResponseRun | None = None
        self._task: asyncio.Task[None] | None = None
        self._options: ResponseOptions | None = None
        self._adoptable: Speculation | None = None
        """A committed turn's speculation whose held reply the next automatic response may take over."""
        self._timing_for: tuple[ResponseRun, TurnTiming | None] | None = None

    @property
    def idle(self) -> bool:
        return self._machine.state is Reply.IDLE

    def request(self, options: ResponseOptions | None, replace_active: bool) -> None:
        self._options = options
        self.input(ReplyInput.CREATE_REPLACING if replace_active else ReplyInput.CREATE)

    def adopt(self, speculation: Speculation) -> None:
        if self._adoptable is not None and self._adoptable is not speculation:
            self._adoptable.discard()  # a held reply waits for its release: one never taken must be stopped
        self._adoptable = speculation

    def close(self) -> None:
        """The session ends: cancel the running response and stop any held one nobody will take."""
        self.cancel("client_cancelled")
        if self._adoptable is not None:
            self._adoptable.discard()
            self._adoptable = None

    def input(self, event: ReplyInput) -> None:
        for action in self._machine.feed(event):
            if action is ReplyAction.START:
                options, self._options = self._options, None
                self._start(options, adopt=event is ReplyInput.AUTO)
            elif action is ReplyAction.REJECT_ACTIVE:
                self._options = None
                self._context.fail(ResponseInProgress(self.run.response_id if self.run else None))
            elif action is ReplyAction.CANCEL_CLIENT:
                self.cancel("client_cancelled")
            elif action is ReplyAction.CANCEL_TURN:
                self.cancel("turn_detected")
            elif action is ReplyAction.INTERRUPT_PLAYBACK:
                self.interrupt_playback()
            elif action is ReplyAction.ERROR_NOT_ACTIVE:
                self._context.fail(NoResponseToCancel())

    def prepare(self, user_text: str, emit: Callable[[ev.Event], None]) -> ResponseRun:
        """A response answering `user_text`, a turn not committed yet, whose events go to `emit` (a speculation
        holds them until the turn ends, then `release()`s them into `_output`)."""
        return self._new_run(None, emit, pending_user_text=user_text)

    def prehears(self) -> bool:
        """Whether the words of a caller still speaking are worth hearing early, for the reply's prompt: a turn
        that will be answered, by an embedded LLM (one that keeps a prompt cache), with no reply running."""
        config, llm = self._context.config, self._context.engines.llm
        td = config.turn_detection
        return (
            config.mode == "converse"
            and td is not None
            and td.create_response
            and llm is not None
            and llm.pool is not None
            and self.idle
        )

    def prehear(self, user_text: str) -> None:
        """The caller is still speaking and has said `user_text` so far: have an embedded LLM evaluate the reply's
        prompt up to those words now, so that when the turn ends only its last words are left to evaluate. Best
        effort: only where `prehears()`, and `LLM.warm()` gives way to any generation."""
        llm = self._context.engines.llm
        if llm is None or not user_text or not self.prehears():
            return
        plan = plan_response(self._context, None, user_text)
        request = ChatRequest(plan.messages, plan.tools, cache_key=plan.cache_key, tool_choice=plan.tool_choice)
        self._context.spawn(llm.warm(request, unfinished=True))

    def _new_run(
        self, options: ResponseOptions | None, emit: Callable[[ev.Event], None], pending_user_text: str | None = None
    ) -> ResponseRun:
        context = self._context
        plan = plan_response(context, options, pending_user_text)
        tts = context.engines.tts if plan.output_audio else None
        llm: LLM | EngineError
        try:
            llm = context.engines.require("llm")
        except EngineUnavailable as exc:
            llm = exc  # the response fails with it in protocol (an `error`, then `response.done` failed)
        return ResponseRun(plan, llm, tts, emit)

    def _start(self, options: ResponseOptions | None, adopt: bool) -> None:
        speculation, self._adoptable = self._adoptable, None
        last_turn = self._context.transcripts.take_last_turn()
        turn = last_turn if adopt else None
        if speculation is not None and not adopt:
            speculation.discard()
            speculation = None
        self.run = None
        self._task = self._context.spawn(self._respond(options, speculation, turn))

    async def _respond(
        self, options: ResponseOptions | None, speculation: Speculation | None, turn: TurnTiming | None
    ) -> None:
        await self._context.transcripts.pending()  # the reply answers every turn committed so far
        run = speculation.take_run() if speculation is not None else None
        if run is not None and speculation is not None:
            self.run, self._timing_for = run, (run, turn)
            speculation.release(self._output, self._pace)  # at most a lead's worth of audio was held
            await speculation.finish()
        else:
            if speculation is not None:
                speculation.discard()
            run = self._new_run(options, self._output)
            self.run, self._timing_for, run.pace = run, (run, turn), self._pace
            await run.run()
        if self.run is run:
            self.input(ReplyInput.FINISHED)

    async def _pace(self, chunk_ms: float) -> None:
        await self._context.playback.wait_room(chunk_ms, OUTPUT_LEAD_MS)

    def cancel(self, reason: str) -> None:
        run, task = self.run, self._task
        if run is not None and not run.done:
            run.cancel(reason)
        if task is not None and not task.done():
            task.cancel()
        self._task = None

    def interrupt_playback(self) -> None:
        context = self._context
        if not context.playback.is_playing():
            return
        response_id, item_id, played, dropped = context.playback.interrupt()
        if item_id is None:
            return
        context.emit(ev.AudioInterrupted(response_id, item_id, played, dropped))
        td = context.config.turn_detection
        if td is not None and td.auto_truncate:
            self._truncate(item_id, 0, played)

    # --- what every response emits --------------------------------------------------------------------------

    def _output(self, event: ev.Event) -> None:
        context = self._context
        if isinstance(event, ev.ResponseAudioDelta):
            context.playback.sent(event.response_id, event.item_id, event.pcm, event.rate)
        elif isinstance(event, ev.OutputItemAdded | ev.OutputItemDone) and self._in_conversation(event.response_id):
            if isinstance(event, ev.OutputItemAdded):
                context.conversation.add(event.item)
            else:
                context.conversation.replace(event.item)
        context.emit(event)
        if isinstance(event, ev.ResponseAudioDelta) or (isinstance(event, ev.ResponseTextDelta) and not event.audio):
            timing = self._first_output(event.response_id)
            if timing is not None:
                context.emit(timing)

    def _in_conversation(self, response_id: str) -> bool:
        run = self.run
        return run is not None and run.response_id == response_id and run.plan.in_conversation

    def _first_output(self, response_id: str) -> ev.ResponseTiming | None:
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
            endpoint_ms=span(turn.voice_end_at, turn.speculated_at) if turn else None,
            llm_wait_ms=span(turn.heard_at, run.llm_started_at) if turn else None,
            first_clause_ms=span(run.first_token_at, run.first_clause_at),
            release_wait_ms=span(run.first_audio_at, now),
        )
