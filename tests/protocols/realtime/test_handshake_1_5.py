"""Spec §1.5 (dialect selection) and §11.1-4 (paths, prefixes, subprotocols), on the handshakes of §12.3. The keys
they carry (§11.3) are the server's access rule's: `tests/server/test_auth.py` reads them from these handshakes."""

from __future__ import annotations

import pytest

from koe.protocols.realtime import Dialect, negotiate

VOICELIVE_QUERY = "api-version=2026-07-15&x-ms-client-sdk=azsdk-python-ai-voicelive%2F1.3.1&model=gpt-4o"
STAINLESS = {
    "X-Stainless-Lang": "python",
    "X-Stainless-Package-Version": "3.54.0",
    "X-Stainless-Async": "async:asyncio",
    "User-Agent": "AsyncOpenAI/Python 3.54.0",
}


def test_voicelive_sdk_handshake() -> None:
    hs = negotiate("/voice-live/realtime", VOICELIVE_QUERY, {"api-key": "local-test-key", "Accept": "*/*"})
    assert hs is not None
    assert (hs.dialect, hs.model, hs.subprotocol) == (Dialect.AZURE, "gpt-4o", None)


def test_quickstart_handshake_with_bearer_token() -> None:
    headers = {"x-ms-client-request-id": "0c6b...", "Authorization": "Bearer eyJ0eXAiOiJKV1Qi.not-checked"}
    hs = negotiate("/voice-live/realtime", "api-version=2025-05-01-preview&model=gpt-4o", headers)
    assert hs is not None
    assert (hs.dialect, hs.model) == (Dialect.AZURE, "gpt-4o")


def test_openai_ga_handshake() -> None:
    hs = negotiate("/v1/realtime", "model=gpt-realtime", {"Authorization": "Bearer local-test-key", **STAINLESS})
    assert hs is not None
    assert (hs.dialect, hs.model) == (Dialect.GA, "gpt-realtime")


@pytest.mark.parametrize("beta_header", ["realtime=v1", "assistants=v2, realtime=v1", "Realtime=V1"])
def test_openai_beta_header_selects_beta(beta_header: str) -> None:
    hs = negotiate("/v1/realtime", "model=gpt-realtime", {"Authorization": "Bearer k", "OpenAI-Beta": beta_header})
    assert hs is not None
    assert hs.dialect is Dialect.BETA


def test_repeated_beta_headers_combine() -> None:
    headers = [("openai-beta", "assistants=v2"), ("openai-beta", "realtime=v1"), ("authorization", "Bearer k")]
    hs = negotiate("/v1/realtime", "", headers)
    assert hs is not None
    assert hs.dialect is Dialect.BETA


def test_browser_subprotocols() -> None:
    offered = ["realtime", "openai-insecure-api-key.sk-browser", "openai-beta.realtime-v1"]
    hs = negotiate("/v1/realtime", "model=gpt-realtime", {}, offered)
    assert hs is not None
    assert (hs.dialect, hs.subprotocol) == (Dialect.BETA, "realtime")


def test_realtime_subprotocol_is_selected_only_when_offered() -> None:
    hs = negotiate("/v1/realtime", "", {}, ["openai-insecure-api-key.k"])
    assert hs is not None
    assert (hs.subprotocol, hs.dialect) == (None, Dialect.GA)


def test_azure_openai_preview_path_is_beta() -> None:
    hs = negotiate("/openai/realtime", "api-version=2024-10-01-preview&deployment=gpt-4o-rt", {"api-key": "k"})
    assert hs is not None
    assert (hs.dialect, hs.model) == (Dialect.BETA, "gpt-4o-rt")


def test_azure_openai_ga_path_is_ga() -> None:
    hs = negotiate("/openai/v1/realtime", "model=gpt-realtime", {"api-key": "k"})
    assert hs is not None
    assert hs.dialect is Dialect.GA


@pytest.mark.parametrize(
    ("query", "model"),
    [("api-key=q1&model=m1", "m1"), ("deployment=m2&api_key=q2", "m2"), ({"api-key": "q3", "model": "m3"}, "m3")],
)
def test_query_as_a_string_or_a_mapping(query: str | dict[str, str], model: str) -> None:
    hs = negotiate("/voice-live/realtime", query, {})
    assert hs is not None
    assert hs.model == model


def test_the_dialect_does_not_depend_on_a_key() -> None:
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}, {"api-key": "k"}):
        hs = negotiate("/v1/realtime", "", headers)
        assert hs is not None
        assert hs.dialect is Dialect.GA


def test_header_names_are_case_insensitive() -> None:
    hs = negotiate("/v1/realtime", "", {"OPENAI-BETA": "realtime=v1"})
    assert hs is not None
    assert hs.dialect is Dialect.BETA


@pytest.mark.parametrize(
    ("path", "dialect"),
    [
        ("/prefix/voice-live/realtime", Dialect.AZURE),  # azure SDK: http://h/prefix → /prefix/voice-live/realtime
        ("/voice-live/realtime/", Dialect.AZURE),
        ("/gw/v1/realtime", Dialect.GA),
        ("/gw/openai/realtime", Dialect.BETA),
    ],
)
def test_any_path_prefix_is_kept(path: str, dialect: Dialect) -> None:
    hs = negotiate(path, "", {})
    assert hs is not None
    assert hs.dialect is dialect


def test_configured_prefix_is_required() -> None:
    assert negotiate("/voice-live/realtime", "", {}, prefix="/koe") is None
    assert negotiate("/koeX/voice-live/realtime", "", {}, prefix="/koe") is None
    hs = negotiate("/koe/voice-live/realtime", "", {}, prefix="/koe/")
    assert hs is not None
    assert hs.dialect is Dialect.AZURE


@pytest.mark.parametrize("path", ["/", "/healthz", "/v1/realtimes", "/voice-live", "/v1/chat/completions"])
def test_other_paths_are_not_realtime(path: str) -> None:
    assert negotiate(path, "", {"api-key": "k"}) is None


def test_transcription_intent() -> None:
    hs = negotiate("/v1/realtime", "intent=transcription", {})
    assert hs is not None
    assert hs.intent == "transcription"
    assert hs.model is None
