"""Strict validators built from the official SDKs, shared by the Realtime codec tests.

`validate_openai(event, dialect)` checks one server event against the openai 3.54.0 pydantic union of its dialect
(GA: `openai.types.realtime.RealtimeServerEvent`, beta and azure: `openai.types.beta.realtime.RealtimeServerEvent`),
in strict mode and from the JSON text actually sent, as openai-agents does (spec Appendix A.4).
`deserialize_azure(event)` parses it the way azure-ai-voicelive 1.3.1 does (`ServerEvent._deserialize`) and insists
on a typed event class, not the base class the SDK falls back to for types it does not know.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import pytest
from azure.ai.voicelive.models import ServerEvent as AzureServerEvent
from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime import RealtimeServerEvent as GaServerEvent
from pydantic import Field, TypeAdapter

from koe.protocols.realtime import Dialect, encode_event

GA_EVENTS: TypeAdapter[Any] = TypeAdapter(Annotated[GaServerEvent, Field(discriminator="type")])
BETA_EVENTS: TypeAdapter[Any] = TypeAdapter(Annotated[BetaServerEvent, Field(discriminator="type")])

ALL_DIALECTS = pytest.mark.parametrize("dialect", list(Dialect), ids=[d.value for d in Dialect])


def validate_openai(event: dict[str, Any], dialect: Dialect) -> Any:
    """The pydantic model the strict openai union gives for `event`; raises ValidationError if it does not fit."""
    adapter = GA_EVENTS if dialect is Dialect.GA else BETA_EVENTS
    return adapter.validate_json(encode_event(event), strict=True)


def deserialize_azure(event: dict[str, Any]) -> Any:
    """The azure-ai-voicelive typed event for `event`, as the SDK's receive loop builds it."""
    parsed = AzureServerEvent._deserialize(orjson.loads(encode_event(event)), [])
    assert type(parsed) is not AzureServerEvent, f"the Voice Live SDK has no typed class for {event['type']}"
    assert parsed.type == event["type"]
    return parsed


def _has_azure_only_values(event: dict[str, Any]) -> bool:
    """Azure values the beta types cannot hold (spec §7): for those the Voice Live SDK is the only contract.

    Sessions carry the deployment's model name (the beta types allow only OpenAI's), responses may carry an Azure voice
    object. Every other Azure event must fit the beta union.
    """
    if event["type"] in ("session.created", "session.updated"):
        return True
    response = event.get("response")
    return isinstance(response, dict) and isinstance(response.get("voice"), dict)


def check_event(event: dict[str, Any], dialect: Dialect, *, openai_union: bool = True) -> None:
    """Every check that applies to `event` in `dialect`: common envelope, the openai union, the azure SDK."""
    assert isinstance(event["type"], str)
    assert event["event_id"].startswith("event_")
    assert len(encode_event(event).encode()) < 1024 * 1024
    if openai_union and not (dialect is Dialect.AZURE and _has_azure_only_values(event)):
        validate_openai(event, dialect)
    if dialect is Dialect.AZURE:
        deserialize_azure(event)
