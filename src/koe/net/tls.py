"""Local TLS: a certificate authority of this machine and a server certificate it signs for 127.0.0.1, ::1 and
localhost, so that clients which insist on `https://` and `wss://` (the Azure OpenAI client, the `openai` npm
package, the ACS SDK built from a connection string) reach koe and the ACS emulator unmodified.

Call `ensure_local_tls(folder)` first: it returns the `TlsFiles` in `folder`, reusing them while they are valid and
making what is missing or stale (a server certificate near its end is re-signed by the same CA, so clients that
trust the CA keep trusting it). `koe tls init`, `koe serve --tls` and the ACS emulator all call it, by default on
`default_tls_dir()`; a file lock makes two of them starting at once agree on one CA. `server_context()` builds the
server side (ALPN h2 and http/1.1) for the listeners that take an `ssl.SSLContext`, `client_context()` a client
side that trusts one more CA besides the system's.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from koe.config import data_dir

CA_VALIDITY_DAYS = 3650
CERT_VALIDITY_DAYS = 397
"""The longest that browsers accept for a server certificate (a local CA's included, on some platforms)."""
RENEW_BEFORE_DAYS = 30
"""A certificate that ends sooner than this is made anew."""
CA_NAME = "koe local CA"
DNS_NAMES = ("localhost",)
IP_ADDRESSES = ("127.0.0.1", "::1")
_BACKDATE = datetime.timedelta(minutes=5)
"""Certificates start a little in the past, for clocks that differ slightly."""


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    """What a client trusts: `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`, `NODE_EXTRA_CA_CERTS`."""
    cert: Path
    key: Path

    def client_lines(self) -> list[str]:
        """The environment lines a client needs to trust this CA (Python's ssl and aiohttp, requests, Node)."""
        ca = self.ca_cert
        return [f"SSL_CERT_FILE={ca}", f"REQUESTS_CA_BUNDLE={ca}", f"NODE_EXTRA_CA_CERTS={ca}"]


def default_tls_dir() -> Path:
    """`$XDG_DATA_HOME/koe/tls`, else `~/.local/share/koe/tls`."""
    return data_dir() / "tls"


def tls_files(folder: Path) -> TlsFiles:
    return TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")


def ensure_local_tls(folder: Path | None = None) -> tuple[TlsFiles, bool]:
    """The CA and server certificate in `folder` (default: `default_tls_dir()`), and whether any were made now."""
    folder = (folder or default_tls_dir()).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    files = tls_files(folder)
    ca_key_path = folder / "ca.key"
    with _locked(folder / ".lock"):
        now = datetime.datetime.now(datetime.UTC)
        ca = _load_ca(files.ca_cert, ca_key_path, now)
        made = False
        if ca is None:
            ca = _make_ca(now)
            _write(files.ca_cert, ca[0].public_bytes(serialization.Encoding.PEM))
            _write(ca_key_path, _key_pem(ca[1]), private=True)
            made = True
        if made or not _server_cert_valid(files, ca[0], now):
            cert, key = _make_server_cert(ca, now)
            _write(files.key, _key_pem(key), private=True)
            _write(files.cert, cert.public_bytes(serialization.Encoding.PEM))
            made = True
    return files, made


def server_context(cert: Path, key: Path, alpn: tuple[str, ...] = ("h2", "http/1.1")) -> ssl.SSLContext:
    """Server TLS (1.2 or later) from a certificate chain and its key, offering `alpn`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def client_context(*extra_cas: Path | None) -> ssl.SSLContext:
    """A client context trusting the system's CAs (or `SSL_CERT_FILE`'s) and each of `extra_cas` given."""
    context = ssl.create_default_context()
    for ca in extra_cas:
        if ca is not None:
            context.load_verify_locations(cafile=str(ca))
    return context


# --- making and checking ----------------------------------------------------------------------------------------


def _make_ca(now: datetime.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=CA_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_server_cert(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], now: datetime.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in DNS_NAMES]
    names += [x509.IPAddress(ipaddress.ip_address(address)) for address in IP_ADDRESSES]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + datetime.timedelta(days=CERT_VALIDITY_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _load_ca(
    cert_path: Path, key_path: Path, now: datetime.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The CA when both its files read, match, and it stays valid long enough; else None (make a new one)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _same_key(cert, key):
        return None
    if cert.not_valid_after_utc - now < datetime.timedelta(days=RENEW_BEFORE_DAYS):
        return None
    return cert, key


def _server_cert_valid(files: TlsFiles, ca: x509.Certificate, now: datetime.datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _same_key(cert, key):
        return False
    wanted_ips = {ipaddress.ip_address(address) for address in IP_ADDRESSES}
    covered = (
        set(names.get_values_for_type(x509.DNSName)) >= set(DNS_NAMES)
        and set(names.get_values_for_type(x509.IPAddress)) >= wanted_ips
    )
    return covered and cert.not_valid_after_utc - now >= datetime.timedelta(days=RENEW_BEFORE_DAYS)


def _same_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    form = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*form) == key.public_key().public_bytes(*form)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write whole or not at all (a reader never sees half a file), private keys readable by the owner only."""
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
