"""Helpers for the Sora door tests: a gateway on a free loopback port, the fixture packets, and throwaway PKI."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from koe.config import SoraSettings
from koe.engines.registry import Engines
from koe.protocols.sora import SoraRequest, frame_packet, request_headers
from koe.server.calls.registry import CallRegistry
from koe.server.sora.gateway import SoraGateway
from koe.sim.sora.gateway_client import GatewayConnection, GatewayStream, TLSOptions
from tests.conftest import FIXTURES

SORA = FIXTURES / "sora"
CAPTURE_REQUEST = SoraRequest("sora", "SESSION0000000000000000000A", "CONNECTION000000000000000AB", "ja-JP", "client-1")


def fixture_packets(name: str = "opus_packets.jsonl") -> list[bytes]:
    lines = (SORA / name).read_text().splitlines()
    return [base64.b64decode(json.loads(line)["b64"]) for line in lines]


def capture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SORA / name).read_text())
    return data


def framed(packets: list[bytes]) -> list[bytes]:
    return [frame_packet(p, 1_795_422_666_893_554 + i * 20_000, i) for i, p in enumerate(packets)]


@asynccontextmanager
async def running_gateway(
    engines: Engines | None = None, calls: CallRegistry | None = None, **settings: Any
) -> AsyncIterator[SoraGateway]:
    defaults: dict[str, Any] = {"port": 0, "service": "test", "time_to_wait_for_opus_packet_ms": 10000}
    gateway = SoraGateway(SoraSettings(**{**defaults, **settings}), engines, calls)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.close()


async def connect(gateway: SoraGateway, tls: TLSOptions | None = None) -> GatewayConnection:
    scheme = "https" if tls else "http"
    return await GatewayConnection.connect(f"{scheme}://127.0.0.1:{gateway.port}", tls=tls)


async def post(
    conn: GatewayConnection, path: str, frames: list[bytes], request: SoraRequest = CAPTURE_REQUEST, end: bool = True
) -> GatewayStream:
    stream = await conn.open_stream(path, request_headers(request))
    for frame in frames:
        await stream.send(frame)
    if end:
        await stream.end()
    return stream


# --- throwaway PKI for h2 over TLS and mTLS -------------------------------------------------------------------


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _ca(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], common: str, server: bool) -> tuple[bytes, bytes]:
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(ca[1].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca[0], hashes.SHA256())
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


def make_pki(folder: Path) -> dict[str, Path]:
    """Server and client CAs, a server certificate, a client certificate, and one from a CA nobody trusts."""
    server_ca, client_ca, rogue_ca = _ca("server CA"), _ca("Sora client CA"), _ca("rogue CA")
    files: dict[str, bytes] = {
        "server_ca.pem": server_ca[1].public_bytes(serialization.Encoding.PEM),
        "client_ca.pem": client_ca[1].public_bytes(serialization.Encoding.PEM),
    }
    files["server.pem"], files["server.key"] = _leaf(server_ca, "localhost", server=True)
    files["client.pem"], files["client.key"] = _leaf(client_ca, "sora", server=False)
    files["rogue.pem"], files["rogue.key"] = _leaf(rogue_ca, "sora", server=False)
    paths = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths[name.replace(".", "_")] = folder / name
    return paths
