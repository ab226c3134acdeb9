"""The local CA (`koe.net.tls`) and `koe tls init`: made once and kept while valid, a stale server certificate
re-signed by the same CA, a broken CA made anew, private keys for the owner only, and a certificate that a client
trusting only the CA accepts for 127.0.0.1 and localhost."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from koe.cli import main
from koe.net.tls import ensure_local_tls, server_context, tls_files


def test_made_once_then_kept(tmp_path: Path) -> None:
    files, made = ensure_local_tls(tmp_path)
    assert made
    before = {path: path.read_bytes() for path in (files.ca_cert, files.cert, files.key)}
    again, made_again = ensure_local_tls(tmp_path)
    assert again == files
    assert not made_again
    assert {path: path.read_bytes() for path in before} == before
    assert files.key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "ca.key").stat().st_mode & 0o777 == 0o600


def test_a_stale_certificate_is_re_signed_by_the_same_ca(tmp_path: Path) -> None:
    files, _ = ensure_local_tls(tmp_path)
    ca = files.ca_cert.read_bytes()
    files.cert.write_bytes(files.ca_cert.read_bytes())  # not a server certificate for the loopback names
    _, made = ensure_local_tls(tmp_path)
    assert made
    assert files.ca_cert.read_bytes() == ca  # clients that trust the CA keep trusting it
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca))
    days = (cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)).days
    assert 390 <= days <= 397


def test_a_broken_ca_is_made_anew(tmp_path: Path) -> None:
    files, _ = ensure_local_tls(tmp_path)
    (tmp_path / "ca.key").write_text("not a key")
    old = files.ca_cert.read_bytes()
    _, made = ensure_local_tls(tmp_path)
    assert made
    assert files.ca_cert.read_bytes() != old


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost"])
async def test_a_client_trusting_the_ca_accepts_the_certificate(tmp_path: Path, name: str) -> None:
    files, _ = ensure_local_tls(tmp_path)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context(files.cert, files.key))
    port = server.sockets[0].getsockname()[1]
    try:
        client = ssl.create_default_context(cafile=str(files.ca_cert))
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname=name)
        writer.write(b"hello\n")
        assert await reader.readline() == b"hello\n"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_koe_tls_init_prints_what_clients_need(tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path)}
    first = CliRunner().invoke(main, ["tls", "init"], env=env)
    second = CliRunner().invoke(main, ["tls", "init"], env=env)
    ca = tls_files(tmp_path / "koe" / "tls").ca_cert
    assert first.exit_code == second.exit_code == 0
    assert first.stdout == second.stdout == (f"SSL_CERT_FILE={ca}\nREQUESTS_CA_BUNDLE={ca}\nNODE_EXTRA_CA_CERTS={ca}\n")
    assert "koe: made the local CA" in first.stderr
    assert "koe: kept the local CA" in second.stderr
    elsewhere = CliRunner().invoke(main, ["tls", "init", "--dir", str(tmp_path / "other")], env=env)
    assert f"SSL_CERT_FILE={tmp_path / 'other' / 'ca.pem'}" in elsewhere.stdout
