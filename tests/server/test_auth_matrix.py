"""The access rule on a real koe served on loopback: every route of every door × every credential form × right,
wrong and mixed credentials (keys, ACS's JWT and the Event Grid secret configured), and, with no keys (the loopback
rule), a foreign Origin, a foreign Host, a JSON body not sent as JSON, and the console's same-origin requests.

koe runs with `Engines()`, nothing loaded: the rule decides before any engine is asked, so an admitted request is
any answer but 401, 403 and 415 (a 400, 404 or 503 from the route itself; a 101 for a WebSocket). Requests are
written by hand (`_exchange`), so that each header, Host and Origin included, is exactly what the case says; the Sora
audio paths are HTTP/2, through the Sora simulator's client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from websockets.asyncio.client import connect as ws_connect
from websockets.typing import Subprotocol

from koe.config import Settings, load_settings
from koe.engines.registry import Engines
from koe.net.inprocess import free_port, serving
from koe.protocols.sora import request_headers
from koe.server.app import create_app
from koe.server.auth import Kind, is_loopback
from koe.server.run import access_summary, start_acs_media
from koe.server.sora.gateway import SoraGateway
from koe.sim.acs.tokens import SigningKey
from koe.sim.sora.gateway_client import GatewayConnection
from tests.server.acs.support import serve_app
from tests.server.sora.support import CAPTURE_REQUEST

pytestmark = pytest.mark.timeout(120)

KEY = "matrix-key"
WRONG = "not-the-key"
SECRET = "event-grid-secret"
AUDIENCE = "acs-resource-1"
ROGUE = SigningKey()
"""Signs tokens koe's JWKS does not know."""
REFUSED = (401, 403, 415)
WAIT_S = 10.0
MULTIPART = b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--b--\r\n'


@dataclass(frozen=True)
class Target:
    """One route: how to reach it, and which credentials it takes."""

    name: str
    kind: Kind
    method: str = "GET"
    """An HTTP method, `WS` (an upgrade), or `H2` (a Sora audio POST over HTTP/2)."""
    path: str = ""
    port: str = "main"
    content_type: str | None = None
    body: bytes = b""

    def __str__(self) -> str:
        return self.name


def _get(path: str, kind: Kind = Kind.API, port: str = "main") -> Target:
    return Target(f"GET {path}" + (f" ({port} port)" if port != "main" else ""), kind, "GET", path, port)


def _post(path: str, content_type: str | None, body: bytes, kind: Kind = Kind.API) -> Target:
    return Target(f"POST {path}", kind, "POST", path, content_type=content_type, body=body)


def _ws(path: str, kind: Kind = Kind.API, port: str = "main") -> Target:
    return Target(f"WS {path}" + (f" ({port} port)" if port != "main" else ""), kind, "WS", path, port)


JSON = "application/json"
KEYED_ROUTES = [
    _get("/v1/models"),
    _get("/v1/models/koe"),
    _post("/v1/audio/transcriptions", "multipart/form-data; boundary=b", MULTIPART),
    _post("/v1/audio/speech", JSON, b'{"model": "tts-1", "input": "hi", "voice": "x"}'),
    _post("/v1/chat/completions", JSON, b'{"model": "koe", "messages": []}'),
    _get("/v1/voices"),
    _get("/v1/calls"),
    _get("/v1/calls/none"),
    _get("/v1/calls/*/events"),
    _ws("/v1/calls/*/events"),
    _post("/v1/calls/none/media/start", JSON, b'{"operationContext": "x"}'),
    _post("/v1/calls/none/media/stop", JSON, b"{}"),
    _post("/v1/calls/none/hangup", None, b""),
    _get("/metrics"),
    _ws("/v1/realtime"),
    _ws("/openai/v1/realtime"),
    _ws("/openai/realtime"),
    _ws("/voice-live/realtime"),
    _ws("/acs/media", Kind.ACS_MEDIA),
    _ws("/acs/media/call-7", Kind.ACS_MEDIA, port="acs"),
    _post("/acs/events", JSON, b"[]", Kind.ACS_EVENTS),
    Target("OPTIONS /acs/events", Kind.ACS_EVENTS, "OPTIONS", "/acs/events"),
    _post("/acs/callbacks", JSON, b"[]", Kind.ACS_CALLBACKS),
]
PUBLIC_ROUTES = [_get(path, Kind.PAGE) for path in ("/", "/calls", "/static/koe.css", "/healthz", "/openapi.json")]
SORA_ROUTES = [
    *(
        Target(f"POST {path} (sora port, HTTP/2)", Kind.SORA, "H2", path, "sora")
        for path in ("/speech", "/test", "/dump")
    ),
    _get("/.ok", Kind.SORA, "sora"),
    _get("/metrics", Kind.SORA, "sora"),
]
BODY_ROUTES = [target for target in KEYED_ROUTES if target.method == "POST"]


@dataclass
class Koe:
    ports: dict[str, int]
    signing: SigningKey
    app: Starlette

    def host(self, target: Target) -> str:
        return f"127.0.0.1:{self.ports[target.port]}"


@dataclass
class Parts:
    """What a case adds to a request."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    query: list[tuple[str, str]] = field(default_factory=list)
    subprotocols: list[str] = field(default_factory=list)

    def __add__(self, other: Parts) -> Parts:
        return Parts(self.headers + other.headers, self.query + other.query, self.subprotocols + other.subprotocols)


@dataclass(frozen=True)
class Form:
    """One way to carry a credential, and the routes that take it."""

    name: str
    carry: Callable[[str], Parts]
    applies: Callable[[Target], bool]
    right: Callable[[Koe], str]
    wrong: str

    def __str__(self) -> str:
        return self.name


def _keyed(_target: Target) -> bool:
    return True


FORMS = [
    Form("api-key header", lambda v: Parts(headers=[("api-key", v)]), _keyed, lambda _k: KEY, WRONG),
    Form("bearer", lambda v: Parts(headers=[("authorization", f"Bearer {v}")]), _keyed, lambda _k: KEY, WRONG),
    Form(
        "subprotocol",
        lambda v: Parts(subprotocols=["koe-events", "realtime", f"openai-insecure-api-key.{v}"]),
        lambda t: t.method == "WS",
        lambda _k: KEY,
        WRONG,
    ),
    Form("query", lambda v: Parts(query=[("api-key", v)]), _keyed, lambda _k: KEY, WRONG),
    Form(
        "acs jwt",
        lambda v: Parts(headers=[("authorization", f"Bearer {v}")]),
        lambda t: t.kind in (Kind.ACS_MEDIA, Kind.ACS_CALLBACKS),
        lambda k: k.signing.sign(AUDIENCE),
        ROGUE.sign(AUDIENCE),
    ),
    Form(
        "event grid code",
        lambda v: Parts(query=[("code", v)]),
        lambda t: t.kind is Kind.ACS_EVENTS,
        lambda _k: SECRET,
        WRONG,
    ),
]
_OTHER = {"api-key header": FORMS[3]}
"""The carrier that holds the wrong credential of a mixed case: the query, or, for the api-key header, the header."""

KEYED_CASES = [
    pytest.param(target, form, outcome, id=f"{target}-{form}-{outcome}")
    for target in KEYED_ROUTES
    for form in FORMS
    if form.applies(target)
    for outcome in ("right", "wrong", "mixed")
]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


# --- koe, twice ---------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Koe]:
    """The main port, the ACS media listener and the Sora listener, as `koe serve` runs them, with no engines."""
    settings.acs.media_port = free_port()
    app = create_app(settings, Engines())
    async with serving(app, host=settings.server.host) as main:
        listener = await start_acs_media(settings, app.state.acs, lambda _said: None)
        assert listener is not None
        sora = SoraGateway(settings.sora, None, app.state.calls, access=settings)
        await sora.start()
        try:
            yield Koe({"main": main, "acs": listener.port, "sora": sora.port}, SigningKey(), app)
        finally:
            await sora.close()
            await listener.close()


def _settings(server: dict[str, Any], acs: dict[str, Any], host: str = "127.0.0.1") -> Settings:
    return load_settings(
        overrides={
            "server": {"host": host, **server},
            "acs": {"mode": "echo", "media_host": host, **acs},
            "sora": {"host": host, "port": 0, "service": "test"},
        }
    )


@pytest.fixture(scope="module")
async def keyed() -> AsyncIterator[Koe]:
    """Keys, ACS's JWT and the Event Grid secret configured."""
    signing = SigningKey()

    async def keys(_request: Request) -> JSONResponse:
        return JSONResponse(signing.jwks())

    async with serve_app(Starlette(routes=[Route("/calling/keys", keys)])) as jwks:
        jwt = {"enabled": True, "jwks_url": f"{jwks}/calling/keys", "audience": AUDIENCE}
        settings = _settings({"api_keys": [KEY]}, {"jwt": jwt, "event_grid_secret": SECRET})
        async with running(settings) as koe:
            koe.signing = signing
            yield koe


@pytest.fixture(scope="module")
async def loopback() -> AsyncIterator[Koe]:
    """The default: no credentials configured anywhere."""
    async with running(_settings({}, {})) as koe:
        yield koe


# --- one request, written by hand -----------------------------------------------------------------------------


async def _exchange(
    koe: Koe,
    target: Target,
    parts: Parts | None = None,
    *,
    host: str | None = None,
    origin: str | None = None,
    content_type: str | None = "",
    via: str = "127.0.0.1",
) -> Answer:
    """Send `target`'s request with `parts`, a Host (default: the port's own), an Origin and a Content-Type
    (default: the route's own) to the address `via`, and read the answer's head, and its body when it is a
    refusal."""
    parts = parts or Parts()
    headers = [("host", host or koe.host(target))] + ([("origin", origin)] if origin else []) + parts.headers
    content_type = target.content_type if content_type == "" else content_type
    if target.method == "H2":
        return await _sora_stream(koe, target, headers, via)
    path = target.path + (f"?{urlencode(parts.query)}" if parts.query else "")
    body = target.body
    if target.method == "WS":
        key = base64.b64encode(os.urandom(16)).decode()
        headers += [("upgrade", "websocket"), ("connection", "Upgrade"), ("sec-websocket-key", key)]
        headers += [("sec-websocket-version", "13")]
        if parts.subprotocols:
            headers.append(("sec-websocket-protocol", ", ".join(parts.subprotocols)))
        method = "GET"
    else:
        method = target.method
        headers += [("connection", "close"), ("content-length", str(len(body)))]
        headers += [("content-type", content_type)] if content_type else []
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    reader, writer = await asyncio.open_connection(via, koe.ports[target.port])
    try:
        writer.write(head.encode("latin-1") + (body if method != "GET" else b""))
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        answer_headers = {
            n.strip().lower(): v.strip() for n, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        content = b""
        if status in REFUSED:
            length = answer_headers.get("content-length")
            if length is not None:
                content = await asyncio.wait_for(reader.readexactly(int(length)), WAIT_S)
            else:
                content = _dechunk(await asyncio.wait_for(reader.read(), WAIT_S))
        return Answer(status, answer_headers, content)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if not size:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


async def _sora_stream(koe: Koe, target: Target, headers: list[tuple[str, str]], via: str) -> Answer:
    conn = await GatewayConnection.connect(f"http://{via}:{koe.ports['sora']}")
    try:
        conn.authority = dict(headers)["host"]
        extra = [(name, value) for name, value in headers if name != "host"]
        stream = await conn.open_stream(target.path, request_headers(CAPTURE_REQUEST) + extra)
        status = await asyncio.wait_for(stream.response(), WAIT_S)
        assert status is not None
        if status in REFUSED:
            await stream.closed(WAIT_S)
        return Answer(status, dict(stream.headers), bytes(stream.body))
    finally:
        await conn.close()


def _assert_admitted(answer: Answer, target: Target) -> None:
    assert answer.status not in REFUSED, (answer.status, answer.body)
    if target.method == "WS":
        assert answer.status == 101


def _assert_refused(answer: Answer, target: Target, status: int) -> dict[str, Any]:
    """The refusal, in the door's own format; returns its error object."""
    assert answer.status == status, (answer.status, answer.body)
    assert (answer.headers.get("www-authenticate") == 'Bearer realm="koe"') == (status == 401), answer.headers
    body = answer.error()
    if target.kind is Kind.SORA:
        assert set(body) == {"message", "reason"}  # Suzu's error body, with koe's reason
        return body
    error: dict[str, Any] = body["error"]
    assert error["message"] and error["code"]
    if target.kind is not Kind.ACS_MEDIA:
        assert set(error) == {"message", "type", "param", "code"}  # OpenAI's error body
    return error


# --- with keys ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "form", "outcome"), KEYED_CASES)
async def test_every_credential_form_right_wrong_and_mixed(
    keyed: Koe, target: Target, form: Form, outcome: str
) -> None:
    right = form.carry(form.right(keyed))
    if outcome == "right":
        _assert_admitted(await _exchange(keyed, target, right), target)
        return
    if outcome == "wrong":
        parts = form.carry(form.wrong)
    else:  # a right credential next to a wrong one in another carrier
        other = _OTHER.get(form.name, FORMS[0])
        parts = right + other.carry(other.wrong)
    _assert_refused(await _exchange(keyed, target, parts), target, 401)


@pytest.mark.parametrize("target", KEYED_ROUTES, ids=str)
async def test_no_credential_is_a_401_even_from_loopback(keyed: Koe, target: Target) -> None:
    _assert_refused(await _exchange(keyed, target), target, 401)


@pytest.mark.parametrize("target", [t for t in KEYED_ROUTES if t.kind in (Kind.ACS_MEDIA, Kind.ACS_CALLBACKS)], ids=str)
async def test_an_acs_token_for_another_resource_is_a_403(keyed: Koe, target: Target) -> None:
    token = keyed.signing.sign("another-resource")
    error = _assert_refused(await _exchange(keyed, target, FORMS[4].carry(token)), target, 403)
    assert "not for this resource" in error["message"]


@pytest.mark.parametrize("target", BODY_ROUTES, ids=str)
async def test_with_keys_a_body_not_sent_as_its_media_type_is_a_415(keyed: Koe, target: Target) -> None:
    key = FORMS[0].carry(KEY)
    error = _assert_refused(await _exchange(keyed, target, key, content_type="text/plain"), target, 415)
    assert error["code"] == "unsupported_media_type"


@pytest.mark.parametrize("target", [*KEYED_ROUTES, *PUBLIC_ROUTES, *SORA_ROUTES], ids=str)
async def test_with_keys_a_foreign_host_is_refused(keyed: Koe, target: Target) -> None:
    parts = FORMS[0].carry(KEY)
    error = _assert_refused(await _exchange(keyed, target, parts, host="evil.example"), target, 403)
    assert "evil.example" in error.get("message", "") + error.get("reason", "")


@pytest.mark.parametrize("target", [*PUBLIC_ROUTES, *SORA_ROUTES], ids=str)
async def test_with_keys_pages_and_sora_need_none(keyed: Koe, target: Target) -> None:
    # Pages are public; Sora's protocol carries no credentials (mTLS, or a loopback client).
    origin = "http://evil.example" if target.kind is Kind.PAGE else None
    _assert_admitted(await _exchange(keyed, target, origin=origin), target)


async def test_with_keys_a_third_party_web_app_with_a_key_keeps_working(keyed: Koe) -> None:
    for target in KEYED_ROUTES:
        form = FORMS[4] if target.kind is Kind.ACS_CALLBACKS else FORMS[2] if target.method == "WS" else FORMS[1]
        answer = await _exchange(keyed, target, form.carry(form.right(keyed)), origin="https://app.example")
        _assert_admitted(answer, target)


async def test_a_browsers_websocket_gets_a_subprotocol_selected(keyed: Koe) -> None:
    # Browsers drop a WebSocket whose offered subprotocols got no answer; the key's own is never the one selected.
    base = f"ws://127.0.0.1:{keyed.ports['main']}"
    key = f"openai-insecure-api-key.{KEY}"
    for path, offered, selected in (
        ("/v1/calls/*/events", ["koe-events", key], "koe-events"),
        ("/v1/realtime", ["realtime", key], "realtime"),
    ):
        async with ws_connect(base + path, subprotocols=[Subprotocol(p) for p in offered]) as ws:
            assert ws.subprotocol == selected


# --- no keys: the loopback rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [*KEYED_ROUTES, *SORA_ROUTES], ids=str)
async def test_without_keys_a_foreign_origin_is_refused(loopback: Koe, target: Target) -> None:
    error = _assert_refused(await _exchange(loopback, target, origin="http://evil.example"), target, 403)
    assert "evil.example" in error.get("message", "") + error.get("reason", "")


@pytest.mark.parametrize("target", [*KEYED_ROUTES, *PUBLIC_ROUTES, *SORA_ROUTES], ids=str)
async def test_without_keys_a_foreign_host_is_refused(loopback: Koe, target: Target) -> None:
    # DNS rebinding: evil.example resolved to 127.0.0.1, so the page is "same origin" with koe, under its own name.
    answer = await _exchange(loopback, target, host="evil.example:80", origin="http://evil.example")
    _assert_refused(answer, target, 403)


@pytest.mark.parametrize(
    ("target", "content_type"),
    [
        pytest.param(target, content_type, id=f"{target}-{content_type or 'a Blob of no type'}")
        for target in BODY_ROUTES
        for content_type in ("text/plain;charset=UTF-8", None)
        if content_type or target.body  # no body and no Content-Type: nothing to misread
    ],
)
async def test_without_keys_a_json_body_not_sent_as_json_is_a_415(
    loopback: Koe, target: Target, content_type: str | None
) -> None:
    error = _assert_refused(await _exchange(loopback, target, content_type=content_type), target, 415)
    assert error["code"] == "unsupported_media_type"


@pytest.mark.parametrize("target", [*KEYED_ROUTES, *PUBLIC_ROUTES, *SORA_ROUTES], ids=str)
async def test_without_keys_the_consoles_same_origin_requests_are_served(loopback: Koe, target: Target) -> None:
    for name in ("127.0.0.1", "localhost"):
        port = loopback.ports[target.port]
        host = f"{name}:{port}"
        answer = await _exchange(loopback, target, host=host, origin=f"http://{host}")
        _assert_admitted(answer, target)


@pytest.mark.parametrize("target", KEYED_ROUTES, ids=str)
async def test_without_keys_a_stray_key_is_ignored(loopback: Koe, target: Target) -> None:
    # The OpenAI SDKs always send some key; with none configured, carriers mean nothing.
    _assert_admitted(await _exchange(loopback, target, FORMS[1].carry(WRONG) + FORMS[3].carry(WRONG)), target)


def _own_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one that is not loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if is_loopback(address) else address


async def test_bound_to_every_interface_without_credentials_only_loopback_clients_are_served() -> None:
    address = _own_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    settings = _settings({}, {}, host="0.0.0.0")
    assert any("Sora door listens on 0.0.0.0" in line for line in access_summary(settings))
    async with running(settings) as koe:
        for target in [*KEYED_ROUTES, *PUBLIC_ROUTES, *SORA_ROUTES]:
            # Connecting to this machine's own address makes the client that address, not loopback.
            remote = await _exchange(koe, target, host=f"{address}:{koe.ports[target.port]}", via=address)
            if target.kind is Kind.PAGE:
                _assert_admitted(remote, target)
            else:
                assert _assert_refused(remote, target, 403), target
                _assert_admitted(await _exchange(koe, target), target)
