"""The turn and response state machines, as tables.

Two small machines run side by side. The *turn* machine follows one participant's speech: silence, speech, and the
pause after speech during which the turn may still continue. The *reply* machine follows the session's response:
idle, active, or active with an automatic response queued behind it. The session feeds each machine inputs and
carries out the actions the tables name; the tables alone decide what happens next, so every (state, input) pair is
written down here and tested.

Guards live in the choice of input, not in the table: the session sends `BARGE_IN` only when the turn detection
allows interruption, and `CREATE_REPLACING` instead of `CREATE` when the caller asked to cancel a previous response.
"""

from __future__ import annotations

from enum import Enum


class Turn(Enum):
    SILENCE = "silence"
    SPEECH = "speech"
    PAUSE = "pause"
    """Speech stopped, but not for long enough (or not finished enough) to end the turn."""


class TurnInput(Enum):
    VOICE_START = "voice_start"
    VOICE_END = "voice_end"
    TURN_END = "turn_end"
    COMMIT = "commit"
    CLEAR = "clear"
    IDLE_TIMEOUT = "idle_timeout"


class TurnAction(Enum):
    SPEECH_STARTED = "speech_started"
    """Report the onset and open a new user item."""
    BARGE_IN = "barge_in"
    """The caller speaks: interrupt whatever is being said to them (if the turn detection allows it)."""
    SPECULATE = "speculate"
    """Start transcribing (and maybe answering) now, in case the pause ends the turn."""
    DISCARD_SPECULATION = "discard_speculation"
    SPEECH_STOPPED = "speech_stopped"
    COMMIT = "commit"
    """The buffered audio becomes a user item and is transcribed."""
    AUTO_RESPOND = "auto_respond"
    CLEAR = "clear"
    TIMEOUT = "timeout"


_T = TurnAction
TURN_TABLE: dict[tuple[Turn, TurnInput], tuple[Turn, tuple[TurnAction, ...]]] = {
    (Turn.SILENCE, TurnInput.VOICE_START): (Turn.SPEECH, (_T.SPEECH_STARTED, _T.BARGE_IN)),
    (Turn.SILENCE, TurnInput.VOICE_END): (Turn.SILENCE, ()),
    (Turn.SILENCE, TurnInput.TURN_END): (Turn.SILENCE, ()),
    (Turn.SILENCE, TurnInput.COMMIT): (Turn.SILENCE, (_T.COMMIT,)),
    (Turn.SILENCE, TurnInput.CLEAR): (Turn.SILENCE, (_T.CLEAR,)),
    (Turn.SILENCE, TurnInput.IDLE_TIMEOUT): (Turn.SILENCE, (_T.TIMEOUT, _T.AUTO_RESPOND)),
    (Turn.SPEECH, TurnInput.VOICE_START): (Turn.SPEECH, ()),
    (Turn.SPEECH, TurnInput.VOICE_END): (Turn.PAUSE, (_T.SPECULATE,)),
    (Turn.SPEECH, TurnInput.TURN_END): (Turn.SPEECH, ()),
    # A manual commit mid-speech ends the turn at this sample; speech that goes on becomes the next turn.
    (Turn.SPEECH, TurnInput.COMMIT): (Turn.SILENCE, (_T.SPEECH_STOPPED, _T.COMMIT)),
    (Turn.SPEECH, TurnInput.CLEAR): (Turn.SILENCE, (_T.CLEAR,)),
    (Turn.SPEECH, TurnInput.IDLE_TIMEOUT): (Turn.SPEECH, ()),
    (Turn.PAUSE, TurnInput.VOICE_START): (Turn.SPEECH, (_T.DISCARD_SPECULATION,)),
    (Turn.PAUSE, TurnInput.VOICE_END): (Turn.PAUSE, ()),
    (Turn.PAUSE, TurnInput.TURN_END): (Turn.SILENCE, (_T.SPEECH_STOPPED, _T.COMMIT, _T.AUTO_RESPOND)),
    (Turn.PAUSE, TurnInput.COMMIT): (Turn.SILENCE, (_T.SPEECH_STOPPED, _T.COMMIT)),
    (Turn.PAUSE, TurnInput.CLEAR): (Turn.SILENCE, (_T.DISCARD_SPECULATION, _T.CLEAR)),
    (Turn.PAUSE, TurnInput.IDLE_TIMEOUT): (Turn.PAUSE, ()),
}


class Reply(Enum):
    IDLE = "idle"
    ACTIVE = "active"
    ACTIVE_QUEUED = "active_queued"
    """A response is running and an automatic one waits to start when it finishes."""


class ReplyInput(Enum):
    CREATE = "create"
    CREATE_REPLACING = "create_replacing"
    AUTO = "auto"
    CANCEL = "cancel"
    BARGE_IN = "barge_in"
    FINISHED = "finished"


class ReplyAction(Enum):
    START = "start"
    REJECT_ACTIVE = "reject_active"
    """Fail with `errors.ResponseInProgress`."""
    CANCEL_CLIENT = "cancel_client"
    """Cancel the running response with reason `client_cancelled`."""
    CANCEL_TURN = "cancel_turn"
    """Cancel the running response with reason `turn_detected`."""
    INTERRUPT_PLAYBACK = "interrupt_playback"
    """Flush audio the listener has not heard yet and report how much they did."""
    ERROR_NOT_ACTIVE = "error_not_active"
    """Fail with `errors.NoResponseToCancel`."""


_R = ReplyAction
REPLY_TABLE: dict[tuple[Reply, ReplyInput], tuple[Reply, tuple[ReplyAction, ...]]] = {
    (Reply.IDLE, ReplyInput.CREATE): (Reply.ACTIVE, (_R.START,)),
    (Reply.IDLE, ReplyInput.CREATE_REPLACING): (Reply.ACTIVE, (_R.START,)),
    (Reply.IDLE, ReplyInput.AUTO): (Reply.ACTIVE, (_R.START,)),
    (Reply.IDLE, ReplyInput.CANCEL): (Reply.IDLE, (_R.ERROR_NOT_ACTIVE,)),
    (Reply.IDLE, ReplyInput.BARGE_IN): (Reply.IDLE, (_R.INTERRUPT_PLAYBACK,)),
    (Reply.IDLE, ReplyInput.FINISHED): (Reply.IDLE, ()),
    (Reply.ACTIVE, ReplyInput.CREATE): (Reply.ACTIVE, (_R.REJECT_ACTIVE,)),
    (Reply.ACTIVE, ReplyInput.CREATE_REPLACING): (Reply.ACTIVE, (_R.CANCEL_CLIENT, _R.START)),
    (Reply.ACTIVE, ReplyInput.AUTO): (Reply.ACTIVE_QUEUED, ()),
    (Reply.ACTIVE, ReplyInput.CANCEL): (Reply.IDLE, (_R.CANCEL_CLIENT,)),
    (Reply.ACTIVE, ReplyInput.BARGE_IN): (Reply.IDLE, (_R.CANCEL_TURN, _R.INTERRUPT_PLAYBACK)),
    (Reply.ACTIVE, ReplyInput.FINISHED): (Reply.IDLE, ()),
    (Reply.ACTIVE_QUEUED, ReplyInput.CREATE): (Reply.ACTIVE_QUEUED, (_R.REJECT_ACTIVE,)),
    (Reply.ACTIVE_QUEUED, ReplyInput.CREATE_REPLACING): (Reply.ACTIVE, (_R.CANCEL_CLIENT, _R.START)),
    (Reply.ACTIVE_QUEUED, ReplyInput.AUTO): (Reply.ACTIVE_QUEUED, ()),
    (Reply.ACTIVE_QUEUED, ReplyInput.CANCEL): (Reply.IDLE, (_R.CANCEL_CLIENT,)),
    (Reply.ACTIVE_QUEUED, ReplyInput.BARGE_IN): (Reply.IDLE, (_R.CANCEL_TURN, _R.INTERRUPT_PLAYBACK)),
    (Reply.ACTIVE_QUEUED, ReplyInput.FINISHED): (Reply.ACTIVE, (_R.START,)),
}


class TurnMachine:
    """One participant's turn state. `feed()` returns the actions to carry out, in order."""

    def __init__(self) -> None:
        self.state = Turn.SILENCE

    def feed(self, event: TurnInput) -> tuple[TurnAction, ...]:
        self.state, actions = TURN_TABLE[(self.state, event)]
        return actions


class ReplyMachine:
    """The session's response state. `feed()` returns the actions to carry out, in order."""

    def __init__(self) -> None:
        self.state = Reply.IDLE

    def feed(self, event: ReplyInput) -> tuple[ReplyAction, ...]:
        self.state, actions = REPLY_TABLE[(self.state, event)]
        return actions
