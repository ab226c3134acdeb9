"""Which Realtime dialect a WebSocket upgrade speaks, and the subprotocol to select (spec §1.5, §11.1-4).

Call `negotiate(path, query, headers, subprotocols)` on the HTTP upgrade request, before accepting it. It returns a
`Handshake` (dialect, the subprotocol to select, the model) or None when the path is not a Realtime path (answer 404).
The key a client presents (§11.3) is not read here: the server's one access rule (`koe.server.auth`) reads every
carrier of it, the same way on every door.

The three dialects:
* `azure`: `/voice-live/realtime`; beta event names plus the Azure session fields and events, for every api-version.
* `beta`: `/openai/realtime` (Azure OpenAI preview), or `/realtime` with `OpenAI-Beta: realtime=v1` or the
  `openai-beta.realtime-v1` subprotocol; beta event names and the flat OpenAI session.
* `ga`: any other `/realtime` (`/v1/realtime`, `/openai/v1/realtime`); GA names and the nested session.
Paths match by suffix, so every path prefix the SDKs keep (`http://host/prefix` → `/prefix/voice-live/realtime`)
works; a configured `prefix` additionally has to be there.

`Dialect` (`koe.dialects`, below every layer so the configuration can name it too) is koe's one vocabulary for
them: the door, the Realtime client (`koe.protocols.realtime.client`) and the configuration (`acs.bridge.dialect`,
`sora.relay_kind`) all use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

from koe.dialects import DIALECT_ALIASES, Dialect, dialect_named

__all__ = ["DIALECT_ALIASES", "Dialect", "Handshake", "dialect_named", "negotiate"]


REALTIME_SUBPROTOCOL = "realtime"
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"

_AZURE_SUFFIX = "/voice-live/realtime"
_AZURE_OPENAI_SUFFIX = "/openai/realtime"
_REALTIME_SUFFIX = "/realtime"
_BETA_HEADER_VALUE = "realtime=v1"


@dataclass(frozen=True, slots=True)
class Handshake:
    dialect: Dialect
    subprotocol: str | None
    """The subprotocol to select in the 101 response: `realtime` when offered (browsers abort otherwise)."""
    model: str | None
    """`model` query parameter (Azure OpenAI preview: `deployment`)."""
    intent: str | None = None
    """GA `?intent=transcription` opens a transcription session."""


def negotiate(
    path: str,
    query: str | Mapping[str, str],
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    subprotocols: Sequence[str] = (),
    *,
    prefix: str = "",
) -> Handshake | None:
    """The dialect, subprotocol and model of an upgrade request; None if `path` is no Realtime endpoint."""
    dialect = _dialect_for_path(path, prefix)
    if dialect is None:
        return None
    params = dict(parse_qsl(query, keep_blank_values=True)) if isinstance(query, str) else dict(query)
    header_map = _lower_headers(headers)
    if dialect is Dialect.GA and (
        _BETA_HEADER_VALUE in _comma_values(header_map.get("openai-beta", "")) or BETA_SUBPROTOCOL in subprotocols
    ):
        dialect = Dialect.BETA
    return Handshake(
        dialect=dialect,
        subprotocol=REALTIME_SUBPROTOCOL if REALTIME_SUBPROTOCOL in subprotocols else None,
        model=params.get("model") or params.get("deployment") or None,
        intent=params.get("intent") or None,
    )


def _dialect_for_path(path: str, prefix: str) -> Dialect | None:
    path = path.split("?", 1)[0].rstrip("/")
    prefix = prefix.rstrip("/")
    if prefix and not (path == prefix or path.startswith(prefix + "/")):
        return None
    if path.endswith(_AZURE_SUFFIX):
        return Dialect.AZURE
    if path.endswith(_AZURE_OPENAI_SUFFIX):
        return Dialect.BETA
    if path.endswith(_REALTIME_SUFFIX):
        return Dialect.GA
    return None


def _lower_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        # Repeated headers (e.g. two OpenAI-Beta lines) combine as HTTP says: comma-joined.
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _comma_values(value: str) -> list[str]:
    return [v.strip().lower() for v in value.split(",")]
