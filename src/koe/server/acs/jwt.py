"""Validation of the RS256 JWT that ACS sends with each media WebSocket (`Authorization: Bearer …`).

Make one `AcsTokenValidator(settings.acs.jwt)` per app and give its `verdict` to the access rule
(`koe.server.auth.admit`), which calls it for each Bearer token that is not an API key where ACS's JWT is a credential;
`await validator.validate(headers)` returns the token's claims or raises `TokenRejected` with a status (401
missing/invalid, 403 wrong audience or issuer) and a reason. Keys come from the configured JWKS URL and are cached;
an unknown key id triggers one refetch (at most every `JWKS_REFETCH_S`) so key rotation works without a restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Mapping
from typing import Any

import httpx
import jwt
from jwt.algorithms import RSAAlgorithm

from koe.config import ACSJWTSettings
from koe.server.auth import TokenVerdict

log = logging.getLogger("koe.server.acs.door")

JWKS_TTL_S = 3600.0
JWKS_REFETCH_S = 60.0
JWKS_TIMEOUT_S = 5.0
LEEWAY_S = 60
"""Clock skew tolerated on exp/nbf/iat."""


class TokenRejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class AcsTokenValidator:
    def __init__(self, settings: ACSJWTSettings) -> None:
        self.settings = settings
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def validate(self, headers: Mapping[str, str]) -> dict[str, Any]:
        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise TokenRejected(401, "missing Authorization: Bearer token")
        return await self.validate_token(auth[7:].strip())

    async def verdict(self, token: str) -> TokenVerdict:
        """`validate_token` as the access rule takes it (`koe.server.auth.admit`)."""
        try:
            await self.validate_token(token)
        except TokenRejected as exc:
            return TokenVerdict(exc.status, exc.reason)
        return TokenVerdict()

    async def validate_token(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRejected(401, f"malformed token: {exc}") from exc
        if header.get("alg") != "RS256":
            raise TokenRejected(401, f"token algorithm {header.get('alg')!r} is not RS256")
        key = await self._key(str(header.get("kid", "")))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=self.settings.audience or None,
                issuer=self.settings.issuer or None,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud"], "verify_aud": bool(self.settings.audience)},
            )
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as exc:
            raise TokenRejected(403, f"token not for this resource: {exc}") from exc
        except jwt.PyJWTError as exc:
            raise TokenRejected(401, f"invalid token: {exc}") from exc
        return claims

    async def _key(self, kid: str) -> Any:
        async with self._lock:
            stale = time.monotonic() - self._fetched_at > JWKS_TTL_S
            unknown = kid not in self._keys and time.monotonic() - self._fetched_at > JWKS_REFETCH_S
            if stale or unknown or not self._keys:
                await self._fetch()
        if kid in self._keys:
            return self._keys[kid]
        if not kid and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        raise TokenRejected(401, f"token signed with unknown key {kid!r}")

    async def _fetch(self) -> None:
        ca_file = self.settings.ca_file
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        try:
            async with httpx.AsyncClient(timeout=JWKS_TIMEOUT_S, verify=verify) as client:
                response = await client.get(self.settings.jwks_url)
                response.raise_for_status()
                document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.error("cannot fetch the ACS JWKS from %s: %s", self.settings.jwks_url, exc)
            if not self._keys:
                raise TokenRejected(401, "cannot verify tokens: the JWKS is unreachable") from exc
            return
        keys: dict[str, Any] = {}
        for entry in document.get("keys", []) if isinstance(document, dict) else []:
            if isinstance(entry, dict) and entry.get("kty") == "RSA":
                keys[str(entry.get("kid", ""))] = RSAAlgorithm.from_jwk(json.dumps(entry))
        self._keys = keys
        self._fetched_at = time.monotonic()
