"""The HMAC-SHA256 request signature of ACS's REST API (spec §4.4), both sides: `sign_request()` makes the headers
a client sends (what the SDKs do with the connection string's access key), `check_signature()` verifies them (what
the emulator does). Pure functions of their arguments.

    headers = sign_request("POST", "https://127.0.0.1:8443/koe/ring", body, access_key)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import urlsplit

MAX_CLOCK_SKEW_S = 15 * 60


class SignatureError(Exception):
    """The request is not signed with the access key; the message says how (ACS answers 401)."""


def access_key_bytes(access_key: str) -> bytes:
    """The key of a connection string; it must be base64, as ACS's are."""
    try:
        return base64.b64decode(access_key, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("an ACS access key is base64 (for example, the output of `openssl rand -base64 32`)") from exc


def content_hash(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


def string_to_sign(method: str, target: str, date: str, host: str, body_hash: str) -> str:
    """`target` is the path and query as sent (`/calling/callConnections/x?api-version=…`)."""
    return f"{method}\n{target}\n{date};{host};{body_hash}"


def signature(access_key: str, to_sign: str) -> str:
    return base64.b64encode(hmac.new(access_key_bytes(access_key), to_sign.encode(), hashlib.sha256).digest()).decode()


def sign_request(method: str, url: str, body: bytes, access_key: str) -> dict[str, str]:
    """The `x-ms-date`, `x-ms-content-sha256` and `Authorization` headers for a request to `url`."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    date = formatdate(usegmt=True)
    body_hash = content_hash(body)
    to_sign = string_to_sign(method, target, date, parts.netloc, body_hash)
    return {
        "x-ms-date": date,
        "x-ms-content-sha256": body_hash,
        "Authorization": "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature="
        + signature(access_key, to_sign),
    }


def check_signature(method: str, target: str, headers: Mapping[str, str], body: bytes, access_key: str) -> None:
    """Raise `SignatureError` unless the request carries a valid signature by `access_key` (headers lowercased)."""
    auth = headers.get("authorization", "")
    date = headers.get("x-ms-date", "")
    body_hash = headers.get("x-ms-content-sha256", "")
    if not auth.startswith("HMAC-SHA256 ") or not date or not body_hash:
        raise SignatureError("missing HMAC-SHA256 authorization, x-ms-date or x-ms-content-sha256")
    if body_hash != content_hash(body):
        raise SignatureError("x-ms-content-sha256 does not match the body")
    try:
        skew = abs(parsedate_to_datetime(date).timestamp() - time.time())
    except (TypeError, ValueError) as exc:
        raise SignatureError("x-ms-date is not an RFC 1123 date") from exc
    if skew > MAX_CLOCK_SKEW_S:
        raise SignatureError("lifetime validation of the signed http request failed")
    expected = signature(access_key, string_to_sign(method, target, date, headers.get("host", ""), body_hash))
    if not hmac.compare_digest(auth.split("Signature=", 1)[-1], expected):
        raise SignatureError("the HMAC signature does not match")
