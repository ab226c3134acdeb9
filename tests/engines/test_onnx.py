"""The onnxruntime options every ONNX backend starts from: threads beyond one never spin."""

from __future__ import annotations

import pytest

from koe.engines._onnx import session_options

SPINNING = "session.intra_op.allow_spinning"


@pytest.mark.parametrize("threads", [2, 4])
def test_threads_beyond_one_do_not_spin(threads: int) -> None:
    options = session_options(threads)
    assert options.intra_op_num_threads == threads
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry(SPINNING) == "0"


def test_one_thread_keeps_onnxruntime_defaults() -> None:
    options = session_options(1)
    assert options.intra_op_num_threads == 1
    with pytest.raises(Exception, match="allow_spinning"):  # not set: onnxruntime's own default applies
        options.get_session_config_entry(SPINNING)


def test_piper_on_the_default_threads_does_not_spin() -> None:
    from koe.config import Settings
    from koe.engines.tts_piper import PiperTTS

    threads = Settings().tts.threads
    assert threads > 1
    tts = PiperTTS.load(threads=threads)
    session = tts.voice(tts.default_voice).session
    assert session.get_session_options().get_session_config_entry(SPINNING) == "0"
