"""The dialects of the Realtime API that koe speaks and calls: one vocabulary, named once.

* `azure`: Azure Voice Live (beta event names plus the Azure session fields and events);
* `beta`: OpenAI's beta Realtime (and Azure OpenAI's preview);
* `ga`: OpenAI's GA Realtime.

It sits below every layer because the configuration names it too (`acs.bridge.dialect`, `sora.relay_kind`); the
protocol itself is `koe.protocols.realtime`. `dialect_named(name)` also takes the names the configuration used
before (`openai`, `openai-beta`, `voicelive`).
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Mapping


class Dialect(enum.StrEnum):
    AZURE = "azure"
    BETA = "beta"
    GA = "ga"


DIALECT_ALIASES: Mapping[str, Dialect] = {"openai": Dialect.GA, "openai-beta": Dialect.BETA, "voicelive": Dialect.AZURE}
"""Earlier names of the dialects in koe's configuration, still accepted."""


def dialect_named(name: object) -> Dialect:
    """The dialect called `name` (`ga`, `beta`, `azure`, or an alias of `DIALECT_ALIASES`); ValueError otherwise."""
    if isinstance(name, Dialect):
        return name
    if isinstance(name, str):
        key = name.strip().lower()
        with contextlib.suppress(ValueError):
            return Dialect(key)
        if key in DIALECT_ALIASES:
            return DIALECT_ALIASES[key]
    names = ", ".join([*Dialect, *DIALECT_ALIASES])
    raise ValueError(f"unknown Realtime dialect {name!r}: use one of {names}")
