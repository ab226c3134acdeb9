"""What `koe serve` says at startup about who may connect (`koe.server.run.access_summary`), for each way the access
rule can be configured."""

from __future__ import annotations

from typing import Any

from koe.config import load_settings
from koe.server.run import access_summary


def _summary(**overrides: Any) -> str:
    return "\n".join(access_summary(load_settings(overrides=overrides)))


def test_the_default_says_loopback_only_and_names_the_origin_setting() -> None:
    said = _summary()
    assert "no API keys configured: only clients on this machine (loopback)" in said
    assert "server.allowed_origins" in said
    assert "hosts" not in said  # on loopback, the Host rule needs no explaining
    assert "Sora" not in said


def test_keys_name_every_carrier() -> None:
    said = _summary(server={"api_keys": ["a", "b"]})
    assert "2 API key(s) configured" in said
    for carrier in ("api-key header", "Authorization: Bearer", "openai-insecure-api-key.<key>", "?api-key="):
        assert carrier in said
    assert "loopback" not in said


def test_every_interface_lists_the_hosts_koe_answers_to() -> None:
    said = _summary(server={"host": "0.0.0.0", "api_keys": ["k"], "allowed_hosts": ["koe.example.com"]})
    assert (
        "requests must name one of these hosts (server.allowed_hosts): localhost, IP addresses, koe.example.com" in said
    )


def test_a_sora_door_off_loopback_without_mtls_is_announced_as_loopback_only() -> None:
    said = _summary(sora={"host": "0.0.0.0"})
    assert (
        "the Sora door listens on 0.0.0.0 without client certificates: it serves only clients on this machine" in said
    )
    mtls = _summary(sora={"host": "0.0.0.0", "https": True, "tls_verify_cacert_path": "/etc/ssl/ca.pem"})
    assert "Sora" not in mtls
