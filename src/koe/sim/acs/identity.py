"""The emulator's identity from run to run: its access key (the connection string's `accesskey`) and its resource id
(the audience of its tokens), so an application configured once keeps working after the emulator restarts.

`emulator_identity(settings.acs_emulator)` takes them from the config (`[acs_emulator]`, `KOE_ACS_EMULATOR__*`)
when set there, else from `acs-emulator.json` in koe's data directory, which it makes the first time.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

from koe.config import ACSEmulatorSettings, data_dir
from koe.sim.acs.signing import access_key_bytes

IDENTITY_FILE = "acs-emulator.json"


@dataclass(frozen=True)
class EmulatorIdentity:
    access_key: str
    resource_id: str

    def connection_string(self, endpoint: str) -> str:
        return f"endpoint={endpoint};accesskey={self.access_key}"


def emulator_identity(settings: ACSEmulatorSettings, folder: Path | None = None) -> EmulatorIdentity:
    """The configured key and resource id, each falling back to the kept one (made and kept when there is none)."""
    key = settings.access_key.get_secret_value() if settings.access_key is not None else None
    if key is not None:
        access_key_bytes(key)  # a ValueError saying what a key must be
    if key is not None and settings.resource_id:
        return EmulatorIdentity(key, settings.resource_id)
    kept = _kept(folder or data_dir())
    return EmulatorIdentity(key or kept.access_key, settings.resource_id or kept.resource_id)


def _kept(folder: Path) -> EmulatorIdentity:
    path = folder / IDENTITY_FILE
    try:
        data = json.loads(path.read_text("utf-8"))
        identity = EmulatorIdentity(str(data["access_key"]), str(data["resource_id"]))
        access_key_bytes(identity.access_key)
        return identity
    except (OSError, ValueError, KeyError, TypeError):
        pass
    identity = EmulatorIdentity(base64.b64encode(secrets.token_bytes(32)).decode(), str(uuid.uuid4()))
    folder.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump({"access_key": identity.access_key, "resource_id": identity.resource_id}, handle)
    os.replace(temporary, path)
    return identity
