"""The turn and reply tables: every (state, input) pair, and random walks that check the invariants."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from koe.voice.turns import (
    REPLY_TABLE,
    TURN_TABLE,
    Reply,
    ReplyAction,
    ReplyInput,
    ReplyMachine,
    Turn,
    TurnAction,
    TurnInput,
    TurnMachine,
)


def test_every_turn_pair_is_in_the_table() -> None:
    assert set(TURN_TABLE) == set(itertools.product(Turn, TurnInput))


def test_every_reply_pair_is_in_the_table() -> None:
    assert set(REPLY_TABLE) == set(itertools.product(Reply, ReplyInput))


AUTOMATIC_ENDS = (TurnInput.TURN_END, TurnInput.IDLE_TIMEOUT)
"""Inputs the turn detection produces by itself; a manual commit or clear is the client's, and so is its reply."""


@pytest.mark.parametrize(("state", "event"), list(itertools.product(Turn, TurnInput)))
def test_every_turn_transition_keeps_the_turn_rules(state: Turn, event: TurnInput) -> None:
    machine = TurnMachine()
    machine.state = state
    actions = machine.feed(event)
    after = machine.state
    did = set(actions)
    assert len(did) == len(actions), "an action carried out twice"
    if after is not state:
        assert actions, "a state change that nobody hears about"
    # Voice always means speech, resumed or new; the idle timer never moves a turn.
    if event is TurnInput.VOICE_START:
        assert after is Turn.SPEECH
    if event is TurnInput.IDLE_TIMEOUT:
        assert after is state
    # Speech starts exactly when a silent participant starts speaking, and the onset is reported before the
    # interruption of whatever was playing to them.
    starts = state is Turn.SILENCE and event is TurnInput.VOICE_START
    assert (TurnAction.SPEECH_STARTED in did) == starts
    assert (TurnAction.BARGE_IN in did) == starts
    if starts:
        assert actions.index(TurnAction.SPEECH_STARTED) < actions.index(TurnAction.BARGE_IN)
    # A pause is speculated on from its first moment, and only then.
    assert (TurnAction.SPECULATE in did) == (state is Turn.SPEECH and after is Turn.PAUSE)
    # Leaving a pause throws its speculation away, unless the turn is committed (the commit takes it over).
    left_pause = state is Turn.PAUSE and after is not Turn.PAUSE
    assert (TurnAction.DISCARD_SPECULATION in did) == (left_pause and TurnAction.COMMIT not in did)
    # Every commit request commits; otherwise only the pause that ends the turn does, and a turn is committed
    # only once speech is behind it.
    committed = event is TurnInput.COMMIT or (state is Turn.PAUSE and event is TurnInput.TURN_END)
    assert (TurnAction.COMMIT in did) == committed
    if committed:
        assert after is Turn.SILENCE
    # A turn in progress that ends in a commit reports where the speech stopped, before the commit.
    stops = state is not Turn.SILENCE and committed
    assert (TurnAction.SPEECH_STOPPED in did) == stops
    if stops:
        assert actions.index(TurnAction.SPEECH_STOPPED) < actions.index(TurnAction.COMMIT)
    # Clearing always ends in silence, last, and never commits what it threw away.
    if event is TurnInput.CLEAR:
        assert after is Turn.SILENCE and actions[-1:] == (TurnAction.CLEAR,)
    assert (TurnAction.CLEAR in did) == (event is TurnInput.CLEAR)
    # Only silence times out.
    assert (TurnAction.TIMEOUT in did) == (state is Turn.SILENCE and event is TurnInput.IDLE_TIMEOUT)
    # What the turn detection ends by itself (a turn, or a silence) gets an automatic reply, last; nothing else does.
    automatic = event in AUTOMATIC_ENDS and bool(did & {TurnAction.COMMIT, TurnAction.TIMEOUT})
    assert (TurnAction.AUTO_RESPOND in did) == automatic
    if automatic:
        assert actions[-1:] == (TurnAction.AUTO_RESPOND,)


def test_manual_commit_during_speech_reports_the_stop_then_commits() -> None:
    machine = TurnMachine()
    machine.feed(TurnInput.VOICE_START)
    assert machine.feed(TurnInput.COMMIT) == (TurnAction.SPEECH_STOPPED, TurnAction.COMMIT)
    assert machine.state is Turn.SILENCE
    # Speech that goes on is a new turn with its own onset.
    assert TurnAction.SPEECH_STARTED in machine.feed(TurnInput.VOICE_START)


def test_pause_then_resumed_speech_discards_the_speculation_and_keeps_the_item() -> None:
    machine = TurnMachine()
    machine.feed(TurnInput.VOICE_START)
    assert machine.feed(TurnInput.VOICE_END) == (TurnAction.SPECULATE,)
    assert machine.feed(TurnInput.VOICE_START) == (TurnAction.DISCARD_SPECULATION,)
    assert machine.state is Turn.SPEECH


def test_cancel_with_no_active_response_is_an_error() -> None:
    machine = ReplyMachine()
    assert machine.feed(ReplyInput.CANCEL) == (ReplyAction.ERROR_NOT_ACTIVE,)
    assert machine.state is Reply.IDLE


def test_barge_in_cancels_then_flushes() -> None:
    machine = ReplyMachine()
    machine.feed(ReplyInput.AUTO)
    assert machine.feed(ReplyInput.BARGE_IN) == (ReplyAction.CANCEL_TURN, ReplyAction.INTERRUPT_PLAYBACK)
    assert machine.state is Reply.IDLE


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(list(TurnInput)), max_size=60))
def test_turn_walk_invariants(events: list[TurnInput]) -> None:
    machine = TurnMachine()
    open_item = False
    speculating = False
    for event in events:
        before = machine.state
        actions = machine.feed(event)
        for action in actions:
            if action is TurnAction.SPEECH_STARTED:
                assert before is Turn.SILENCE and not open_item
                open_item = True
            elif action is TurnAction.SPEECH_STOPPED:
                assert open_item, "speech_stopped without speech_started"
                open_item = False
            elif action is TurnAction.SPECULATE:
                assert before is Turn.SPEECH
                speculating = True
            elif action is TurnAction.DISCARD_SPECULATION:
                assert speculating
                speculating = False
            elif action is TurnAction.COMMIT:
                speculating = False
            elif action is TurnAction.CLEAR:
                open_item = speculating = False
        assert (machine.state is not Turn.SILENCE) == open_item or event is TurnInput.CLEAR
        if machine.state is Turn.SILENCE:
            open_item = False


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(list(ReplyInput)), max_size=60))
def test_reply_walk_never_runs_two_responses(events: list[ReplyInput]) -> None:
    machine = ReplyMachine()
    running = 0
    queued = False
    for event in events:
        before = machine.state
        actions = machine.feed(event)
        if event is ReplyInput.FINISHED and before is not Reply.IDLE:
            running -= 1
        for action in actions:
            if action is ReplyAction.START:
                running += 1
                queued = False
            elif action in (ReplyAction.CANCEL_CLIENT, ReplyAction.CANCEL_TURN):
                assert running == 1, "cancelled a response that was not running"
                running -= 1
            elif action is ReplyAction.ERROR_NOT_ACTIVE:
                assert running == 0
            elif action is ReplyAction.REJECT_ACTIVE:
                assert running == 1
        if machine.state is Reply.ACTIVE_QUEUED:
            queued = True
        elif machine.state is Reply.IDLE:
            queued = False  # cancelling the running response also drops the automatic one behind it
        assert running == (0 if machine.state is Reply.IDLE else 1)
        assert running <= 1
        assert queued == (machine.state is Reply.ACTIVE_QUEUED)
