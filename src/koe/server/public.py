"""What `koe serve --public` demands before it starts: every enabled door refuses clients without credentials.

Call `prepare_public(settings)`: it returns the settings to serve with (listening on all interfaces, `0.0.0.0`,
unless a host was given on the command line, in the config file or in `KOE_SERVER__HOST`) and the reasons to
refuse, one per door that would be open. The rules:

- The main port (Realtime door, REST API, calls, metrics, console): `server.api_keys` must be set.
- The ACS door: its media WebSocket takes those keys (`?api-key=` on the transport URL) or ACS's own JWT; with
  `acs.jwt.enabled`, `acs.jwt.audience` must name the ACS resource, or any ACS-issued token would pass.
- The Sora door: Suzu's protocol carries no credentials at all, so "auth" can only be the transport. Its listener
  must either stay on a loopback address (`sora.host`, the default: reached through a proxy or tunnel that does
  its own auth), or require client certificates: `sora.https` with `sora.tls_verify_cacert_path` (mTLS, which
  Sora supports on its `audio_streaming_url`). Otherwise set `sora.enabled = false`.
"""

from __future__ import annotations

from koe.config import Settings
from koe.server.auth import is_loopback, sora_mtls

PUBLIC_HOST = "0.0.0.0"
"""Where `--public` listens unless told otherwise: every interface."""


def prepare_public(settings: Settings) -> tuple[Settings, list[str]]:
    """The settings `--public` serves with, and why it must not start (empty: it may)."""
    server = settings.server
    if "host" not in server.model_fields_set:
        settings = settings.model_copy(update={"server": server.model_copy(update={"host": PUBLIC_HOST})})
    return settings, public_refusals(settings)


def public_refusals(settings: Settings) -> list[str]:
    refusals: list[str] = []
    if not settings.server.api_keys:
        refusals.append(
            "no API keys are configured: set server.api_keys (or KOE_SERVER__API_KEYS) for the Realtime door, "
            "the REST API and the call registry"
        )
    jwt = settings.acs.jwt
    if settings.acs.enabled and jwt.enabled and not jwt.audience:
        refusals.append(
            "acs.jwt.enabled is set without acs.jwt.audience: set it to the ACS resource's immutable id, "
            "or any ACS-issued token would be accepted"
        )
    sora = settings.sora
    if sora.enabled and not is_loopback(sora.host) and not sora_mtls(sora):
        refusals.append(
            f"the Sora door listens on {sora.host} without client certificates, and Suzu's protocol has no other "
            "auth: set sora.https with sora.tls_verify_cacert_path (mTLS), keep sora.host on loopback, "
            "or set sora.enabled = false"
        )
    return refusals
