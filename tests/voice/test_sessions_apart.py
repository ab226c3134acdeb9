"""Sessions generating at the same time do not leak into each other's replies: N sessions on the one embedded LLM,
each forced by `tool_choice` to its own tool, all asking at once, over several rounds, with a fifth session starting
and cancelling replies among them. Every reply must be a call to the session's own tool whose arguments fit its
schema; what the model puts in them is its own, so only the name and the schema are checked.

The tools' `city` is a free string, as a client would write it: a free string is where a small model used to ramble
until its budget ran out, and the unfinished call was then spoken as text (issue 14); koe bounds every string a
forced call may hold, so the call always closes.
"""

from __future__ import annotations

import asyncio
import json

from koe.engines.base import ToolSpec
from koe.engines.registry import Engines
from koe.voice import events as ev
from koe.voice.config import ResponseOptions, SessionConfig
from koe.voice.conversation import Item, Part, new_id
from koe.voice.session import Session
from tests.voice.test_session import INSTRUCTIONS, Recorder

FREE_CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = tuple(
    ToolSpec(name, f"The {name.removeprefix('get_')} in a city", FREE_CITY)
    for name in ("get_time", "get_weather", "get_news", "get_traffic")
)
ROUNDS = 3
QUESTIONS = ("What time is it in Paris?", "Tell me a long story about the sea.", "Hello there!", "List ten fruits.")


async def _ask(session: Session, recorder: Recorder, text: str) -> ev.ResponseDone:
    session.create_item(Item(new_id("item"), "message", "user", (Part("input_text", text=text),)))
    seen = len(recorder.of(ev.ResponseDone))
    session.create_response(ResponseOptions(output_audio=False))
    await recorder.wait_for(lambda e: isinstance(e, ev.ResponseDone) and len(recorder.of(ev.ResponseDone)) > seen)
    done = recorder.of(ev.ResponseDone)[seen]
    assert isinstance(done, ev.ResponseDone)
    return done


async def _forced(engines: Engines, tool: ToolSpec) -> list[str]:
    """Every round's problems for one session forced to `tool` (empty: every reply was a call to it)."""
    config = SessionConfig(turn_detection=None, tools=TOOLS, tool_choice=tool.name, output_audio=False)
    session = Session(engines, config, default_instructions=INSTRUCTIONS)
    recorder = Recorder(session)
    problems: list[str] = []
    for round_ in range(ROUNDS):
        done = await _ask(session, recorder, QUESTIONS[(round_ + TOOLS.index(tool)) % len(QUESTIONS)])
        calls = [item for item in done.output if item.type == "function_call"]
        said = [item.text for item in done.output if item.type == "message"]
        if done.status != "completed" or said or [call.name for call in calls] != [tool.name]:
            problems.append(f"round {round_}: {done.status}, calls {[c.name for c in calls]}, said {said}")
            continue
        arguments = json.loads(calls[0].arguments)
        if not (isinstance(arguments, dict) and set(arguments) == {"city"} and isinstance(arguments["city"], str)):
            problems.append(f"round {round_}: arguments {calls[0].arguments!r} do not fit the schema")
        session.create_item(Item(new_id("item"), "function_call_output", call_id=calls[0].call_id, output="{}"))
    await recorder.close()
    return problems


async def _interrupter(engines: Engines, stop: asyncio.Event) -> None:
    """A session that keeps starting replies and cancelling them mid-generation."""
    config = SessionConfig(turn_detection=None, output_audio=False)
    session = Session(engines, config, default_instructions=INSTRUCTIONS)
    recorder = Recorder(session)
    while not stop.is_set():
        session.create_item(Item(new_id("item"), "message", "user", (Part("input_text", text="Tell me a story."),)))
        session.create_response()
        await asyncio.sleep(0.3)
        session.cancel_response()
        await asyncio.sleep(0.05)
    await recorder.close()


async def test_concurrent_sessions_each_get_a_valid_call_to_their_own_tool(engines: Engines) -> None:
    stop = asyncio.Event()
    interrupting = asyncio.ensure_future(_interrupter(engines, stop))
    try:
        results = await asyncio.gather(*(_forced(engines, tool) for tool in TOOLS))
    finally:
        stop.set()
        await interrupting
    assert results == [[] for _ in TOOLS]
