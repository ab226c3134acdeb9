"""Who may use a door: one rule for every door that takes koe's own API keys.

With keys configured (`server.api_keys`), a client must present one of them (each door reads it from wherever its
protocol carries it). With none configured, koe accepts only clients on this machine, and says so at startup.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping

from koe.config import Settings


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def admit(settings: Settings, presented_key: str | None, client_host: str | None) -> str | None:
    """None when the client may connect, else the reason it may not (for a 401/403 body or a close reason)."""
    keys = [key.get_secret_value() for key in settings.server.api_keys]
    if not keys:
        if is_loopback(client_host):
            return None
        return "no API keys are configured, so koe accepts only clients on its own machine"
    if presented_key is None:
        return "an API key is required (api-key header or query parameter, or Authorization: Bearer)"
    if any(hmac.compare_digest(presented_key.encode(), key.encode()) for key in keys):
        return None
    return "the API key is not valid"


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key an HTTP client presents: `Authorization: Bearer …` (OpenAI's SDKs, Prometheus) or `api-key` (Azure's)."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return headers.get("api-key") or None
