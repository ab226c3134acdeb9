"""The access rule (`koe.server.auth`) from request descriptions alone, clause by clause: the Host rule, every
carrier × right, wrong and mixed credentials on every keyed kind of route, ACS's JWT and the Event Grid secret, the
loopback rule with its Origin check, the body's media type, the Sora listener, and the statuses' convention."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from koe.config import Settings, load_settings
from koe.server.auth import (
    FORM_BODY,
    JSON_BODY,
    OPTIONAL_JSON_BODY,
    WEBHOOK_BODY,
    WWW_AUTHENTICATE,
    AccessRequest,
    Allowed,
    Body,
    Carrier,
    Credential,
    Decision,
    Kind,
    Listener,
    Refused,
    TokenVerdict,
    admit,
    allowed_hosts,
    decide,
    is_loopback,
)

KEY = "right-key"
OTHER_KEY = "second-key"
WRONG = "wrong-key"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.acs.token"
HOST = ("host", "127.0.0.1:8000")
KEYED = (Kind.API, Kind.ACS_MEDIA, Kind.ACS_EVENTS, Kind.ACS_CALLBACKS)


def settings(**server: Any) -> Settings:
    return load_settings(overrides={"server": server})


KEYS = settings(api_keys=[KEY, OTHER_KEY])
NO_KEYS = settings()


def request(
    kind: Kind = Kind.API,
    headers: Sequence[tuple[str, str]] = (HOST,),
    query: Sequence[tuple[str, str]] = (),
    subprotocols: Sequence[str] = (),
    client: str | None = "127.0.0.1",
    **fields: Any,
) -> AccessRequest:
    return AccessRequest(kind, headers, query, subprotocols, client, **fields)


def carried(carrier: Carrier, value: str) -> dict[str, Any]:
    """The `request()` arguments that carry `value` in `carrier`."""
    if carrier is Carrier.API_KEY_HEADER:
        return {"headers": [("api-key", value)]}
    if carrier is Carrier.BEARER:
        return {"headers": [("authorization", f"Bearer {value}")]}
    if carrier is Carrier.SUBPROTOCOL:
        return {"subprotocols": ["realtime", f"openai-insecure-api-key.{value}"], "websocket": True}
    if carrier is Carrier.QUERY:
        return {"query": [("api-key", value)]}
    return {"query": [("code", value)]}


def combined(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"headers": [HOST], "query": [], "subprotocols": []}
    for part in parts:
        for name, value in part.items():
            out[name] = [*out[name], *value] if isinstance(value, list) else value
    return out


KEY_CARRIERS = (Carrier.API_KEY_HEADER, Carrier.BEARER, Carrier.SUBPROTOCOL, Carrier.QUERY)


def refused(decision: Decision, status: int) -> Refused:
    assert isinstance(decision, Refused), decision
    assert decision.status == status, decision
    return decision


# --- credentials, with keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KEYED)
@pytest.mark.parametrize("carrier", KEY_CARRIERS)
def test_a_right_key_in_any_carrier_is_admitted(kind: Kind, carrier: Carrier) -> None:
    for key in (KEY, OTHER_KEY):
        decision = decide(request(kind, **combined(carried(carrier, key))), KEYS)
        assert decision == Allowed(Credential.API_KEY, carrier)


@pytest.mark.parametrize("kind", KEYED)
@pytest.mark.parametrize("carrier", KEY_CARRIERS)
def test_a_wrong_key_in_any_carrier_is_a_401_with_www_authenticate(kind: Kind, carrier: Carrier) -> None:
    decision = refused(decide(request(kind, **combined(carried(carrier, WRONG))), KEYS), 401)
    assert decision.code == "invalid_api_key"
    assert str(carrier) in decision.message
    assert decision.headers == (("WWW-Authenticate", WWW_AUTHENTICATE),)


@pytest.mark.parametrize("kind", KEYED)
@pytest.mark.parametrize(("right", "wrong"), [(r, w) for r in KEY_CARRIERS for w in KEY_CARRIERS if r is not w])
def test_a_wrong_key_next_to_a_right_one_refuses(kind: Kind, right: Carrier, wrong: Carrier) -> None:
    both = combined(carried(right, KEY), carried(wrong, WRONG))
    decision = refused(decide(request(kind, **both), KEYS), 401)
    assert str(wrong) in decision.message


@pytest.mark.parametrize("kind", KEYED)
def test_no_credential_is_a_401_even_from_loopback(kind: Kind) -> None:
    decision = refused(decide(request(kind), KEYS), 401)
    assert "api-key" in decision.message and decision.headers


def test_two_right_keys_are_admitted_and_a_repeated_header_counts_each_value() -> None:
    both = combined(carried(Carrier.API_KEY_HEADER, KEY), carried(Carrier.BEARER, OTHER_KEY))
    assert decide(request(**both), KEYS) == Allowed(Credential.API_KEY, Carrier.API_KEY_HEADER)
    repeated = [HOST, ("api-key", KEY), ("api-key", WRONG)]
    refused(decide(request(headers=repeated), KEYS), 401)
    queries = [("api-key", KEY), ("api-key", WRONG)]
    refused(decide(request(query=queries), KEYS), 401)


@pytest.mark.parametrize(
    "parts",
    [
        {"headers": [HOST, ("x-api-key", KEY)]},  # undocumented: not a carrier
        {"query": [("api_key", KEY)]},
        {"headers": [HOST, ("authorization", f"Basic {KEY}")]},
        {"headers": [HOST, ("authorization", "Bearer "), ("api-key", "")]},  # an empty carrier is no credential
        {"subprotocols": ["openai-insecure-api-key."]},
        {"query": [("code", KEY)]},  # the Event Grid secret, only on /acs/events when set
    ],
)
def test_what_is_not_a_carrier(parts: dict[str, Any]) -> None:
    refused(decide(request(**parts), KEYS), 401)
    assert decide(request(**parts), NO_KEYS) == Allowed(Credential.LOOPBACK)


def test_the_key_carriers_of_the_clients_handshakes() -> None:
    # The handshakes of the Realtime spec §12.3: the Voice Live SDK, the Voice Live quickstart, openai-python, a
    # browser (openai-node), and Azure's query key; header names in any case (ASGI lowercases them).
    cases: list[dict[str, Any]] = [
        {"headers": [HOST, ("api-key", KEY), ("accept", "*/*")]},
        {"headers": [HOST, ("authorization", f"Bearer {KEY}"), ("x-ms-client-request-id", "0c6b")]},
        {"headers": [HOST, ("authorization", f"bearer  {KEY} ")]},
        {"subprotocols": ["realtime", f"openai-insecure-api-key.{KEY}", "openai-beta.realtime-v1"], "websocket": True},
        {"query": [("api-version", "2026-07-15"), ("api-key", KEY), ("model", "gpt-4o")]},
    ]
    for case in cases:
        assert isinstance(decide(request(**case), KEYS), Allowed), case


# --- ACS's JWT and the Event Grid secret ----------------------------------------------------------------------


JWT = load_settings(overrides={"server": {"api_keys": [KEY]}, "acs": {"jwt": {"enabled": True, "audience": "res"}}})
JWT_ONLY = load_settings(overrides={"acs": {"jwt": {"enabled": True, "audience": "res"}}})


def bearer(token: str, *more: tuple[str, str]) -> list[tuple[str, str]]:
    return [HOST, ("authorization", f"Bearer {token}"), *more]


@pytest.mark.parametrize("kind", [Kind.ACS_MEDIA, Kind.ACS_CALLBACKS])
@pytest.mark.parametrize("settings", [JWT, JWT_ONLY], ids=["with-keys", "jwt-only"])
def test_an_acs_token_is_a_credential_where_acs_sends_one(kind: Kind, settings: Settings) -> None:
    tokens = {TOKEN: TokenVerdict()}
    assert decide(request(kind, bearer(TOKEN)), settings, tokens) == Allowed(Credential.ACS_TOKEN, Carrier.BEARER)
    invalid = refused(decide(request(kind, bearer(TOKEN)), settings, {TOKEN: TokenVerdict(401, "expired")}), 401)
    assert "expired" in invalid.message
    other = decide(request(kind, bearer(TOKEN)), settings, {TOKEN: TokenVerdict(403, "token not for this resource")})
    assert refused(other, 403).message == "token not for this resource"
    refused(decide(request(kind, bearer(TOKEN)), settings), 401)  # a token nobody checked is no credential
    refused(decide(request(kind), settings), 401)  # JWT configured: loopback is not enough
    mixed = request(kind, bearer(TOKEN, ("api-key", WRONG)))
    refused(decide(mixed, settings, tokens), 401)
    mixed = request(kind, bearer(TOKEN), query=[("api-key", WRONG)])
    refused(decide(mixed, settings, tokens), 401)


def test_an_acs_token_is_not_a_credential_elsewhere() -> None:
    for kind in (Kind.API, Kind.ACS_EVENTS):
        refused(decide(request(kind, bearer(TOKEN)), JWT, {TOKEN: TokenVerdict()}), 401)


async def test_admit_verifies_each_bearer_that_is_not_a_key_once() -> None:
    asked: list[str] = []

    async def verify(token: str) -> TokenVerdict:
        asked.append(token)
        return TokenVerdict() if token == TOKEN else TokenVerdict(401, "bad signature")

    headers = [HOST, ("authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {TOKEN}")]
    assert await admit(request(Kind.ACS_MEDIA, headers), JWT, verify) == Allowed(Credential.ACS_TOKEN, Carrier.BEARER)
    assert await admit(request(Kind.ACS_MEDIA, bearer(KEY)), JWT, verify) == Allowed(Credential.API_KEY, Carrier.BEARER)
    refused(await admit(request(Kind.ACS_MEDIA, bearer("forged")), JWT, verify), 401)
    refused(await admit(request(Kind.API, bearer(TOKEN)), JWT, verify), 401)  # not asked: no JWT on this route
    foreign = await admit(request(Kind.ACS_MEDIA, [("host", "evil.example"), *bearer(TOKEN)[1:]]), JWT, verify)
    assert refused(foreign, 403).code == "host_not_allowed"
    assert asked == [TOKEN, "forged"]


def test_the_event_grid_secret_is_a_credential_on_acs_events_only() -> None:
    secret = load_settings(overrides={"server": {"api_keys": [KEY]}, "acs": {"event_grid_secret": "s3cret"}})
    code = [("code", "s3cret")]
    allowed = decide(request(Kind.ACS_EVENTS, query=code), secret)
    assert allowed == Allowed(Credential.EVENT_GRID_CODE, Carrier.EVENT_GRID_CODE)
    assert isinstance(decide(request(Kind.ACS_EVENTS, query=[("api-key", KEY)]), secret), Allowed)
    wrong = refused(decide(request(Kind.ACS_EVENTS, query=[("code", "guess")]), secret), 401)
    assert "Event Grid" in wrong.message
    refused(decide(request(Kind.ACS_EVENTS, query=[*code, ("api-key", WRONG)]), secret), 401)
    refused(decide(request(Kind.API, query=code), secret), 401)
    only = load_settings(overrides={"acs": {"event_grid_secret": "s3cret"}})
    refused(decide(request(Kind.ACS_EVENTS), only), 401)  # a secret is configured: loopback is not enough
    assert isinstance(decide(request(Kind.ACS_EVENTS, query=code), only), Allowed)


# --- the loopback rule, with no keys --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [*KEYED, Kind.SORA])
def test_without_credentials_only_loopback_clients_are_served(kind: Kind) -> None:
    for client in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "localhost"):
        assert decide(request(kind, client=client), NO_KEYS) == Allowed(Credential.LOOPBACK), client
    for remote in ("192.0.2.7", "::ffff:192.0.2.7", "10.0.0.1", "", None):
        assert refused(decide(request(kind, client=remote), NO_KEYS), 403).code == "loopback_only", remote
    # carriers are ignored then: the OpenAI SDKs always send some key
    assert isinstance(decide(request(kind, **combined(carried(Carrier.BEARER, WRONG))), NO_KEYS), Allowed)


@pytest.mark.parametrize("kind", [*KEYED, Kind.SORA])
@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "127.0.0.1:8000", True),
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),  # the console koe serves, same origin
        ("http://localhost:8000", "localhost:8000", True),
        ("http://LOCALHOST", "localhost:80", True),
        ("https://koe.localhost", "koe.localhost", True),
        ("http://[::1]:8000", "[::1]:8000", True),
        ("http://evil.example", "127.0.0.1:8000", False),
        ("http://127.0.0.1:3000", "127.0.0.1:8000", False),  # another port is another origin
        ("https://127.0.0.1:8000", "127.0.0.1:8000", True),  # host:port names the server; one port, one server
        ("null", "127.0.0.1:8000", False),  # a sandboxed frame or a file:// page
        ("http://127.0.0.1:8000", None, False),
        ("garbage", "127.0.0.1:8000", False),
        ("https://app.example.com", "127.0.0.1:8000", True),  # server.allowed_origins
        ("https://app.example.com:443", "127.0.0.1:8000", True),
        ("http://app.example.com", "127.0.0.1:8000", False),
    ],
)
def test_without_keys_a_foreign_origin_is_refused(
    kind: Kind, origin: str | None, host: str | None, allowed: bool
) -> None:
    headers = [("host", host)] if host else []
    headers += [("origin", origin)] if origin else []
    decision = decide(request(kind, headers), settings(allowed_origins=["https://app.example.com"]))
    if allowed:
        assert decision == Allowed(Credential.LOOPBACK)
    else:
        assert refused(decision, 403).code == "origin_not_allowed"


def test_with_keys_the_origin_is_not_checked() -> None:
    headers = [HOST, ("origin", "https://third-party.example"), ("authorization", f"Bearer {KEY}")]
    assert isinstance(decide(request(headers=headers), KEYS), Allowed)


# --- the Host rule --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8000", True),
        ("localhost", True),
        ("LOCALHOST:8000", True),
        ("koe.localhost:8000", True),
        ("[::1]:8000", True),
        ("192.0.2.7:8000", True),  # an IP address cannot be rebound
        ("koe.lan:8000", True),  # server.host
        ("voice.example.com", True),  # acs.public_url
        ("media.example.net:443", True),  # acs.transport_url
        ("gw.corp", True),  # server.allowed_hosts
        ("corp", True),
        ("a.b.corp.", True),
        ("evil.example", False),
        ("evil.example:8000", False),
        ("localhost.evil.example", False),
        ("notcorp", False),
        ("127.0.0.1.evil.example", False),
    ],
)
@pytest.mark.parametrize("kind", list(Kind))
def test_an_unexpected_host_is_refused_on_every_route(kind: Kind, host: str, allowed: bool) -> None:
    configured = load_settings(
        overrides={
            "server": {"host": "koe.lan", "allowed_hosts": ["gw.corp", ".corp"]},
            "acs": {"public_url": "https://voice.example.com", "transport_url": "wss://media.example.net/acs/media"},
        }
    )
    decision = decide(request(kind, [("host", host)]), configured)
    if allowed:
        assert isinstance(decision, Allowed), decision
    else:
        assert refused(decision, 403).code == "host_not_allowed"
        assert not refused(decision, 403).headers


def test_the_host_rule_holds_with_keys_and_a_star_turns_it_off() -> None:
    foreign = [("host", "evil.example"), ("api-key", KEY)]
    assert refused(decide(request(headers=foreign), KEYS), 403).code == "host_not_allowed"
    assert isinstance(decide(request(headers=foreign), settings(api_keys=[KEY], allowed_hosts=["*"])), Allowed)
    assert isinstance(decide(request(headers=[("api-key", KEY)]), KEYS), Allowed)  # no Host: not a browser


def test_allowed_hosts_lists_the_configured_names() -> None:
    configured = load_settings(overrides={"server": {"host": "0.0.0.0", "allowed_hosts": ["x.example"]}})
    assert allowed_hosts(configured) == ["x.example"]
    named = load_settings(overrides={"server": {"host": "Koe.Lan"}, "sora": {"host": "sora.lan"}})
    assert allowed_hosts(named) == ["koe.lan", "sora.lan"]


# --- the body's media type ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "allowed"),
    [
        (JSON_BODY, [("content-type", "application/json")], True),
        (JSON_BODY, [("content-type", "Application/JSON; charset=utf-8")], True),
        (JSON_BODY, [("content-type", "text/plain;charset=UTF-8")], False),  # fetch() with a string body
        (JSON_BODY, [("content-type", "application/x-www-form-urlencoded")], False),
        (JSON_BODY, [("content-type", "multipart/form-data; boundary=x")], False),
        (JSON_BODY, [("content-length", "2")], False),  # fetch() with a Blob of no type
        (JSON_BODY, [], False),
        (OPTIONAL_JSON_BODY, [], True),
        (OPTIONAL_JSON_BODY, [("content-length", "0")], True),
        (OPTIONAL_JSON_BODY, [("content-length", "2")], False),
        (OPTIONAL_JSON_BODY, [("transfer-encoding", "chunked")], False),
        (OPTIONAL_JSON_BODY, [("content-type", "text/plain"), ("content-length", "0")], False),
        (OPTIONAL_JSON_BODY, [("content-type", "application/json"), ("content-length", "2")], True),
        (WEBHOOK_BODY, [("content-type", "application/json")], True),
        (WEBHOOK_BODY, [("content-type", "application/cloudevents+json; charset=utf-8")], True),
        (WEBHOOK_BODY, [("content-type", "application/cloudevents-batch+json")], True),
        (WEBHOOK_BODY, [("content-type", "text/plain")], False),
        (FORM_BODY, [("content-type", "multipart/form-data; boundary=abc")], True),
        (FORM_BODY, [("content-type", "application/json")], False),
    ],
)
@pytest.mark.parametrize("settings", [KEYS, NO_KEYS], ids=["keys", "no-keys"])
def test_a_body_must_be_sent_as_the_media_type_the_route_reads(
    body: Body, headers: list[tuple[str, str]], allowed: bool, settings: Settings
) -> None:
    key = [("api-key", KEY)] if settings.server.api_keys else []
    decision = decide(request(headers=[HOST, *key, *headers], body=body), settings)
    if allowed:
        assert isinstance(decision, Allowed), decision
    else:
        assert refused(decision, 415).code == "unsupported_media_type"


def test_credentials_are_judged_before_the_body() -> None:
    text = [HOST, ("content-type", "text/plain")]
    refused(decide(request(headers=text, body=JSON_BODY), KEYS), 401)
    foreign = [*text, ("origin", "http://evil.example")]
    refused(decide(request(headers=foreign, body=JSON_BODY), NO_KEYS), 403)


# --- pages and the Sora listener ------------------------------------------------------------------------------


def test_pages_are_public_under_the_host_rule() -> None:
    for settings in (KEYS, NO_KEYS):
        foreign = [HOST, ("origin", "http://evil.example")]
        assert decide(request(Kind.PAGE, foreign, client="192.0.2.7"), settings) == Allowed(Credential.PUBLIC)


def test_sora_with_mtls_serves_any_client_but_its_exporter_port_does_not(tmp_path: Any) -> None:
    mtls = load_settings(overrides={"sora": {"https": True, "tls_verify_cacert_path": str(tmp_path)}})
    remote = request(Kind.SORA, client="192.0.2.7", listener=Listener.SORA)
    assert decide(remote, mtls) == Allowed(Credential.CLIENT_CERTIFICATE)
    exporter = request(Kind.SORA, client="192.0.2.7", listener=Listener.SORA_EXPORTER)
    assert "mTLS" in refused(decide(exporter, mtls), 403).message
    tls_only = load_settings(overrides={"sora": {"https": True}})
    refused(decide(remote, tls_only), 403)
    # Sora's protocol carries no credentials: keys do not change its rule
    assert decide(request(Kind.SORA, listener=Listener.SORA), KEYS) == Allowed(Credential.LOOPBACK)
    refused(decide(request(Kind.SORA, **combined(carried(Carrier.BEARER, KEY)), client="192.0.2.7"), KEYS), 403)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "[::1]", "127.0.0.53", "::ffff:127.0.0.1"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "example.com", "192.0.2.1", "", None, "localhost.example"])
def test_hosts_that_are_not_loopback(host: str | None) -> None:
    assert not is_loopback(host)
