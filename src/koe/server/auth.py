"""Who may use koe: the one access rule for every door and route, written once, with no I/O.

Call `decide(request, settings)` with an `AccessRequest` (what arrived: headers, query, offered subprotocols, client
address, listener, the route's `Kind` and the body it reads) and render the `Decision` in the door's own protocol.
On the ACS routes that take ACS's JWT, `await admit(request, settings, verify)` checks each Bearer token with
`verify` first (a JWKS fetch, the only I/O) and then decides. `koe.server._asgi_access` builds requests from ASGI
scopes and renders refusals as OpenAI's error body. The rule, in order (docs/operations.md says it for operators):

1. Host, always: a request naming a Host other than localhost, `*.localhost`, an IP address, a host koe is
   configured with, or one in `server.allowed_hosts` is refused (403): this is what defeats DNS rebinding.
2. Credentials. Carriers, the same on every door: the `api-key` header, `Authorization: Bearer`, the WebSocket
   subprotocol `openai-insecure-api-key.<key>` and the `api-key` query parameter; on the ACS media door and callbacks
   a Bearer may also be ACS's JWT (`acs.jwt.enabled`), on `/acs/events` the `code` query parameter may hold
   `acs.event_grid_secret`. When a route has any credential configured, every credential the request carries must
   be valid (a wrong one anywhere refuses, even next to a right one), and at least one must be present. Statuses:
   401 (with `WWW-Authenticate`) when no valid credential is presented; 403 when a valid one is not for this
   resource (an ACS token for another audience or issuer).
3. The loopback rule, for a route with no credential configured (and the Sora door without mTLS): only clients on
   this machine (else 403), and, since any web page can reach 127.0.0.1, no `Origin` but the request's own
   (`Origin`'s host:port equal to `Host`) or one in `server.allowed_origins` (else 403). Carriers are ignored then.
   With keys, `Origin` is not checked: the key is the proof, and web apps holding a key must keep working.
4. Body, always, on routes that read one: it must be sent as the media type the route parses (415 otherwise), so
   a page cannot send it as a "simple" cross-origin request (text/plain, or a Blob without a type).
Pages, static files, `/healthz` and `/openapi.json` are public: only the Host rule applies to them.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from koe.config import Settings, SoraSettings

KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."
"""Browsers cannot set headers on a WebSocket, so openai-node puts the key in a subprotocol."""
WWW_AUTHENTICATE = 'Bearer realm="koe"'
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


class Kind(enum.Enum):
    """Which credentials a route takes."""

    API = "api"
    """koe's keys: the REST API, the Realtime door, `/v1/calls…`, `/metrics`, `/v1/voices`."""
    PAGE = "page"
    """Public: the pages, their static files, `/healthz`, `/openapi.json`."""
    ACS_MEDIA = "acs_media"
    """Keys, or ACS's JWT when `acs.jwt.enabled`."""
    ACS_EVENTS = "acs_events"
    """Keys, or the `code` of `acs.event_grid_secret`."""
    ACS_CALLBACKS = "acs_callbacks"
    """Keys, or ACS's JWT when `acs.jwt.enabled`."""
    SORA = "sora"
    """No credentials in the protocol: mTLS, or the loopback rule."""


class Listener(enum.Enum):
    MAIN = "main"
    ACS_MEDIA = "acs_media"
    SORA = "sora"
    SORA_EXPORTER = "sora_exporter"
    """`sora.exporter_port`: plain HTTP even when the Sora port has mTLS."""


class Carrier(enum.StrEnum):
    API_KEY_HEADER = "the api-key header"
    BEARER = "Authorization: Bearer"
    SUBPROTOCOL = "the openai-insecure-api-key.<key> subprotocol"
    QUERY = "the api-key query parameter"
    EVENT_GRID_CODE = "the code query parameter"


class Credential(enum.StrEnum):
    API_KEY = "api_key"
    ACS_TOKEN = "acs_token"
    EVENT_GRID_CODE = "event_grid_code"
    CLIENT_CERTIFICATE = "client_certificate"
    LOOPBACK = "loopback"
    """No credential configured for the route: a loopback client, from no foreign origin."""
    PUBLIC = "public"


@dataclass(frozen=True, slots=True)
class Body:
    """The body a route parses: the media types it accepts, and whether it may have none."""

    media_types: frozenset[str]
    optional: bool = False


JSON_BODY = Body(frozenset({"application/json"}))
OPTIONAL_JSON_BODY = Body(frozenset({"application/json"}), optional=True)
WEBHOOK_BODY = Body(
    # Event Grid's own schema and Call Automation send application/json; Event Grid's CloudEvents schema the others.
    frozenset({"application/json", "application/cloudevents+json", "application/cloudevents-batch+json"})
)
FORM_BODY = Body(frozenset({"multipart/form-data"}))


@dataclass(frozen=True, slots=True)
class AccessRequest:
    kind: Kind
    headers: Sequence[tuple[str, str]] = ()
    """Names lowercased; a repeated header once per value."""
    query: Sequence[tuple[str, str]] = ()
    subprotocols: Sequence[str] = ()
    """Offered WebSocket subprotocols."""
    client: str | None = None
    """The client's address."""
    listener: Listener = Listener.MAIN
    websocket: bool = False
    body: Body | None = None

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


@dataclass(frozen=True, slots=True)
class TokenVerdict:
    """What ACS's JWT validator said of one token: valid (`status` None), or refused with 401 or 403."""

    status: int | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Allowed:
    credential: Credential
    carrier: Carrier | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    status: int
    """401: no valid credential presented. 403: a valid one not for this resource, or refused by the loopback or
    Host rule. 415: a body not sent as the route's media type."""
    code: str
    message: str

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return (("WWW-Authenticate", WWW_AUTHENTICATE),) if self.status == 401 else ()


Decision = Allowed | Refused
TokenCheck = Callable[[str], Awaitable[TokenVerdict]]


def decide(request: AccessRequest, settings: Settings, tokens: Mapping[str, TokenVerdict] | None = None) -> Decision:
    """The rule. `tokens`: the verdict on each Bearer token to be read as ACS's JWT (see `admit`)."""
    refused = _host_refusal(request, settings)
    if refused is not None:
        return refused
    decision = _credentials(request, settings, tokens or {})
    if isinstance(decision, Refused) or request.body is None:
        return decision
    return _body_refusal(request, request.body) or decision


async def admit(request: AccessRequest, settings: Settings, verify: TokenCheck | None) -> Decision:
    """`decide()`, after `verify` has judged each Bearer token that is not a key, where ACS's JWT is a credential."""
    tokens: dict[str, TokenVerdict] = {}
    if verify is not None and _takes_acs_token(request.kind, settings) and _host_refusal(request, settings) is None:
        keys = _keys(settings)
        for carrier, value in _presented(request, settings):
            if carrier is Carrier.BEARER and not _is_key(value, keys) and value not in tokens:
                tokens[value] = await verify(value)
    return decide(request, settings, tokens)


def is_loopback(host: str | None) -> bool:
    """True for `localhost` and loopback addresses (IPv4-mapped ones included)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def sora_mtls(sora: SoraSettings) -> bool:
    """The Sora listener requires client certificates: the TLS handshake is then the proof."""
    return bool(sora.https) and sora.tls_verify_cacert_path is not None


def allowed_hosts(settings: Settings) -> list[str]:
    """The Host names koe answers to besides localhost, `*.localhost` and IP addresses."""
    configured = [settings.server.host, settings.acs.media_host, settings.sora.host]
    configured += [urlsplit(url).hostname for url in (settings.acs.public_url, settings.acs.transport_url) if url]
    names = [name.lower() for name in configured if name and not _is_ip(name)]
    return [*dict.fromkeys(names), *settings.server.allowed_hosts]


# --- the Host rule ------------------------------------------------------------------------------------------------


def _host_refusal(request: AccessRequest, settings: Settings) -> Refused | None:
    host = request.header("host")
    if not host:
        return None  # not a browser: every browser request names its host
    name, _ = _split_host(host)
    if _is_ip(name) or name == "localhost" or name.endswith(".localhost"):
        return None  # DNS rebinding needs a name the attacker controls
    for pattern in allowed_hosts(settings):
        pattern = pattern.lower()
        if pattern == "*" or name == pattern or (pattern.startswith(".") and f".{name}".endswith(pattern)):
            return None
    return Refused(403, "host_not_allowed", f"koe does not serve the host {name!r}: add it to server.allowed_hosts")


def _split_host(authority: str) -> tuple[str, int | None]:
    authority = authority.strip().lower()
    if authority.startswith("["):
        name, _, rest = authority[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif authority.count(":") == 1:
        name, _, port = authority.partition(":")
    else:
        name, port = authority, ""
    return name.rstrip("."), int(port) if port.isdigit() else None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


# --- credentials --------------------------------------------------------------------------------------------------


def _credentials(request: AccessRequest, settings: Settings, tokens: Mapping[str, TokenVerdict]) -> Decision:
    kind = request.kind
    if kind is Kind.PAGE:
        return Allowed(Credential.PUBLIC)
    if kind is Kind.SORA:
        if request.listener is Listener.SORA and sora_mtls(settings.sora):
            return Allowed(Credential.CLIENT_CERTIFICATE)
        return _loopback_rule(request, settings)
    keys = _keys(settings)
    if not (keys or _takes_acs_token(kind, settings) or _event_grid_secret(kind, settings)):
        return _loopback_rule(request, settings)
    presented = list(_presented(request, settings))
    if not presented:
        return Refused(401, "invalid_api_key", _required(request, settings))
    valid: list[Allowed] = []
    forbidden: list[str] = []
    for carrier, value in presented:
        credential, verdict = _check(carrier, value, kind, settings, keys, tokens)
        if credential is not None:
            valid.append(Allowed(credential, carrier))
        elif verdict.status == 403:
            forbidden.append(verdict.reason)
        else:
            return Refused(401, "invalid_api_key", _invalid(carrier, verdict))
    if forbidden:
        return Refused(403, "forbidden", forbidden[0])
    return valid[0]


def presented_key(request: AccessRequest, settings: Settings) -> int | None:
    """Which of `server.api_keys` the request presents (its index, never the key), for the limits per key
    (`koe.server.limits`); None when it presents none of them."""
    keys = _keys(settings)
    for _carrier, value in _presented(request, settings):
        for index, key in enumerate(keys):
            if hmac.compare_digest(value.encode(), key):
                return index
    return None


def _check(
    carrier: Carrier,
    value: str,
    kind: Kind,
    settings: Settings,
    keys: list[bytes],
    tokens: Mapping[str, TokenVerdict],
) -> tuple[Credential | None, TokenVerdict]:
    if carrier is Carrier.EVENT_GRID_CODE:
        secret = _event_grid_secret(kind, settings)
        if secret is not None and hmac.compare_digest(value.encode(), secret):
            return Credential.EVENT_GRID_CODE, TokenVerdict()
        return None, TokenVerdict(401)
    if _is_key(value, keys):
        return Credential.API_KEY, TokenVerdict()
    if carrier is Carrier.BEARER and _takes_acs_token(kind, settings):
        verdict = tokens.get(value, TokenVerdict(401, "the token was not checked"))
        return (Credential.ACS_TOKEN if verdict.status is None else None), verdict
    return None, TokenVerdict(401)


def _presented(request: AccessRequest, settings: Settings) -> Iterator[tuple[Carrier, str]]:
    """Every credential the request carries, each where it carries it; an empty one is none."""
    for value in request.header_values("api-key"):
        yield Carrier.API_KEY_HEADER, value.strip()
    for value in request.header_values("authorization"):
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer":
            yield Carrier.BEARER, token.strip()
    for offered in request.subprotocols:
        if offered.startswith(KEY_SUBPROTOCOL_PREFIX):
            yield Carrier.SUBPROTOCOL, offered[len(KEY_SUBPROTOCOL_PREFIX) :]
    code = _event_grid_secret(request.kind, settings) is not None
    for name, value in request.query:
        if name == "api-key":
            yield Carrier.QUERY, value
        elif name == "code" and code:
            yield Carrier.EVENT_GRID_CODE, value


def _keys(settings: Settings) -> list[bytes]:
    return [key.get_secret_value().encode() for key in settings.server.api_keys]


def _is_key(value: str, keys: list[bytes]) -> bool:
    presented = value.encode()
    return any(hmac.compare_digest(presented, key) for key in keys)


def _takes_acs_token(kind: Kind, settings: Settings) -> bool:
    return kind in (Kind.ACS_MEDIA, Kind.ACS_CALLBACKS) and settings.acs.jwt.enabled


def _event_grid_secret(kind: Kind, settings: Settings) -> bytes | None:
    secret = settings.acs.event_grid_secret
    return secret.get_secret_value().encode() if kind is Kind.ACS_EVENTS and secret is not None else None


def _required(request: AccessRequest, settings: Settings) -> str:
    subprotocol = ", the openai-insecure-api-key.<key> subprotocol" if request.websocket else ""
    ways = f"the api-key header, Authorization: Bearer{subprotocol} or ?api-key="
    if _takes_acs_token(request.kind, settings):
        return f"present ACS's token (Authorization: Bearer) or an API key ({ways})"
    if _event_grid_secret(request.kind, settings) is not None:
        return f"present the Event Grid secret (?code=) or an API key ({ways})"
    return f"an API key is required ({ways})"


def _invalid(carrier: Carrier, verdict: TokenVerdict) -> str:
    if carrier is Carrier.EVENT_GRID_CODE:
        return "the Event Grid secret (?code=) is not valid"
    if verdict.reason:  # a Bearer read as ACS's JWT
        return f"Authorization: Bearer holds neither an API key nor a valid ACS token: {verdict.reason}"
    return f"the API key is not valid ({carrier})"


# --- the loopback rule and the body rule --------------------------------------------------------------------------


def _loopback_rule(request: AccessRequest, settings: Settings) -> Decision:
    if not is_loopback(request.client):
        if request.kind is Kind.SORA:
            why = "Sora's protocol carries no credentials, and this listener has no mTLS (sora.tls_verify_cacert_path)"
        else:
            why = "no API keys are configured (server.api_keys)"
        return Refused(403, "loopback_only", f"{why}, so koe serves only clients on its own machine")
    origin = request.header("origin")
    if origin is not None and not _origin_allowed(origin, request.header("host"), settings):
        message = (
            f"koe refuses web pages from {origin} while no API keys are configured: "
            "add the origin to server.allowed_origins, or set server.api_keys"
        )
        return Refused(403, "origin_not_allowed", message)
    return Allowed(Credential.LOOPBACK)


def _origin_allowed(origin: str, host: str | None, settings: Settings) -> bool:
    parsed = _origin(origin)
    if parsed is None:
        return False  # "null" (a sandboxed frame, a file:// page) or garbage
    if any(parsed == _origin(allowed) for allowed in settings.server.allowed_origins):
        return True
    if not host:
        return False
    name, port = _split_host(host)
    return (parsed[1], parsed[2]) == (name, port or _DEFAULT_PORTS.get(parsed[0]))


def _origin(origin: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.rstrip("."), port or _DEFAULT_PORTS[parts.scheme]


def _body_refusal(request: AccessRequest, body: Body) -> Refused | None:
    content_type = request.header("content-type")
    if content_type is None:
        length = request.header("content-length")
        if body.optional and length in (None, "0") and request.header("transfer-encoding") is None:
            return None
        sent = "with no Content-Type"
    else:
        media_type = content_type.partition(";")[0].strip().lower()
        if media_type in body.media_types:
            return None
        sent = f"as {media_type or 'an empty Content-Type'}"
    wanted = " or ".join(sorted(body.media_types))
    return Refused(415, "unsupported_media_type", f"send the body as {wanted}, not {sent}")
