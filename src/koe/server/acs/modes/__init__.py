"""What the ACS door does with a call's audio, one module per mode; `MODES` maps each mode's name to its pipeline.

`base` holds the `Pipeline` contract and the `ModeContext` a pipeline is built with; `echo` plays the call back,
`engine` runs koe's voice engine (`transcribe`, `agent`), and `bridge` relays the call to a Realtime endpoint.
"""

from collections.abc import Callable

from koe.server.acs.modes.base import ModeContext, Pipeline
from koe.server.acs.modes.bridge import BridgePipeline
from koe.server.acs.modes.echo import EchoPipeline
from koe.server.acs.modes.engine import AgentPipeline, TranscribePipeline

MODES: dict[str, Callable[[ModeContext], Pipeline]] = {
    "echo": EchoPipeline,
    "transcribe": TranscribePipeline,
    "agent": AgentPipeline,
    "bridge": BridgePipeline,
}
