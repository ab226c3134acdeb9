"""The argument schema for tests that force a tool call with `tool_choice`.

koe turns the tools' JSON schemas into a grammar when a call is required, so the call and its tool's name are koe's
guarantee; what goes into the arguments is the model's choice within the schema, and changes with the CPU and the
llama.cpp build. `CITY` keeps that choice small and plain: at most 30 letters, spaces and `.,-` (a free string once
held `</tool_call>`, which ends koe's parse of the call early), so CALL_TOKENS always holds the whole call.
"""

from __future__ import annotations

import json
import re
from typing import Any

CITY_PATTERN = r"[A-Za-z][A-Za-z .,-]{0,29}"
CITY: dict[str, Any] = {"type": "string", "pattern": f"^{CITY_PATTERN}$"}
WEATHER_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {"city": CITY}, "required": ["city"]}
CALL_TOKENS = 256


def assert_city_arguments(arguments: str) -> None:
    """The arguments are what the schema allows: one city, as the grammar spelled it. Which city is not checked."""
    parsed = json.loads(arguments)
    assert set(parsed) == {"city"} and re.fullmatch(CITY_PATTERN, parsed["city"]), arguments
