"""Which certificate each listener serves: one rule for the main port, the Sora port and the ACS media port.

Call `effective_tls(settings)` once at start-up. It returns the settings to serve with, every TLS choice made
concrete, and the local CA's files when they are in use (None otherwise):
- the main port serves TLS when `server.tls` is set (`koe serve --tls`) or `server.tls_cert_file` and
  `server.tls_key_file` are; without files, the local CA's certificate (`koe.net.tls`, in `server.tls_dir`) is used,
  made first when missing;
- the Sora port follows the main port unless `sora.https` says otherwise, with its own `sora.tls_*` files when set,
  else the main port's certificate (and, with `sora.https = true` alone, the local CA's);
- the ACS media port (`acs.media_port`, picows) follows the main port with the same certificate.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from koe.config import Settings
from koe.net.tls import TlsFiles, ensure_local_tls, server_context


@dataclass(frozen=True)
class ServedTls:
    settings: Settings
    """With `server.tls_cert_file`/`tls_key_file` set exactly when the main port serves TLS, and `sora.https` a bool."""
    local: TlsFiles | None
    """The local CA's files when a listener serves its certificate."""
    made: bool = False
    """The local CA or certificate was made just now."""


def effective_tls(settings: Settings) -> ServedTls:
    server, sora = settings.server, settings.sora
    local: TlsFiles | None = None
    made = False

    def local_files() -> TlsFiles:
        nonlocal local, made
        if local is None:
            local, made = ensure_local_tls(server.tls_dir)
        return local

    cert, key = server.tls_cert_file, server.tls_key_file
    if cert is None and server.tls:
        files = local_files()
        cert, key = files.cert, files.key
    main_tls = cert is not None
    sora_https = main_tls if sora.https is None else sora.https
    sora_cert, sora_key = sora.tls_fullchain_file, sora.tls_privkey_file
    if sora_https and (sora_cert is None or sora_key is None):
        if cert is not None and key is not None:
            sora_cert, sora_key = cert, key
        else:
            files = local_files()
            sora_cert, sora_key = files.cert, files.key
    effective = settings.model_copy(
        update={
            "server": server.model_copy(update={"tls_cert_file": cert, "tls_key_file": key}),
            "sora": sora.model_copy(
                update={"https": sora_https, "tls_fullchain_file": sora_cert, "tls_privkey_file": sora_key}
            ),
        }
    )
    return ServedTls(effective, local, made)


class TlsSetupError(Exception):
    """A certificate or key cannot be loaded; the message names the setting."""


def media_port_context(settings: Settings) -> ssl.SSLContext | None:
    """The ACS media port's TLS (the main port's certificate; WebSockets over HTTP/1.1), from `effective_tls()`'s
    settings; None when the main port serves plain HTTP."""
    cert, key = settings.server.tls_cert_file, settings.server.tls_key_file
    if cert is None or key is None:
        return None
    return _load(cert, key, "server.tls_cert_file, server.tls_key_file", ("http/1.1",))


def check_certificates(settings: Settings) -> None:
    """Load every listener's certificate once, so that a bad file stops `koe serve` before the models load."""
    media_port_context(settings)
    sora = settings.sora
    if sora.enabled and sora.https and sora.tls_fullchain_file is not None and sora.tls_privkey_file is not None:
        _load(sora.tls_fullchain_file, sora.tls_privkey_file, "sora.tls_fullchain_file, sora.tls_privkey_file")


def _load(cert: Path, key: Path, names: str, alpn: tuple[str, ...] = ("h2", "http/1.1")) -> ssl.SSLContext:
    try:
        return server_context(cert, key, alpn=alpn)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot load the certificate {cert} with its key {key} ({names}): {exc}") from exc


def describe(served: ServedTls) -> list[str]:
    """What `koe serve` says about TLS at start-up (nothing when no listener serves it)."""
    settings = served.settings
    cert = settings.server.tls_cert_file
    lines: list[str] = []
    if served.local is not None:
        ca = served.local.ca_cert
        made = "made now" if served.made else "kept"
        lines.append(
            f"TLS from the local CA ({made}, {ca.parent}); clients trust it with "
            + " ".join(served.local.client_lines())
        )
    elif cert is not None:
        lines.append(f"TLS certificate {cert}")
    return lines
