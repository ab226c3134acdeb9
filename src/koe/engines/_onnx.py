"""The onnxruntime session options every ONNX backend starts from (Piper, Kokoro, Silero).

onnxruntime's intra-op threads spin after each parallel region, waiting for the next one. Alone on the machine
that is what makes two threads fast, but next to another runtime it takes the CPU that runtime needs. Measured on
2 cores with Piper saying a 33-character clause: one thread 111 ms alone, two spinning threads 68 ms alone but
230 ms while the LLM decoded beside them (one thread: 160 ms), two threads without spinning 83 ms alone and 155 ms
beside the LLM. So threads beyond one do not spin: never slower than one thread, and faster whenever a core is
free, as it is for a reply's first clause (the reply stops reading the LLM while TTS makes it).
"""

from __future__ import annotations

from typing import Any


def session_options(threads: int) -> Any:
    """`onnxruntime.SessionOptions` for a session on `threads` intra-op threads, quiet, one graph at a time."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if threads > 1:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options
