"""placeholder"""

from __future__ import annotations

from starlette.routing import BaseRoute

from koe.config import Settings
from koe.server.calls import CallRegistry


def callautomation_routes(settings: Settings, registry: CallRegistry) -> list[BaseRoute]:
    return []
