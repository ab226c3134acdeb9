"""The emulator's signing key: RS256 JWTs like the ones ACS puts in `Authorization: Bearer`, and the JWKS that
verifies them.

Make a `SigningKey()` (a fresh 2048-bit RSA key), call `sign(audience=…)` for each WebSocket connection or
callback, and publish `jwks()` at a URL the server under test is configured with (the Call Automation emulator
serves it at `/calling/keys`, like ACS's `https://acscallautomation.communication.azure.com/calling/keys`).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ACS_ISSUER = "https://acscallautomation.communication.azure.com"
WEBSOCKET_TOKEN_LIFETIME_S = 24 * 3600
"""ACS's media WebSocket tokens live 24 h; its webhook tokens 5 minutes."""
CALLBACK_TOKEN_LIFETIME_S = 5 * 60
_RSA_BITS = 2048


class SigningKey:
    def __init__(self, issuer: str = ACS_ISSUER, key_id: str | None = None) -> None:
        self.issuer = issuer
        self.key_id = key_id or uuid.uuid4().hex
        self._private = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)

    def sign(
        self,
        audience: str,
        *,
        lifetime_s: float = WEBSOCKET_TOKEN_LIFETIME_S,
        issuer: str | None = None,
        claims: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> str:
        """An RS256 JWT for `audience` (ACS uses the resource's immutable id), valid from now for `lifetime_s`."""
        issued = int(time.time() if now is None else now)
        payload: dict[str, Any] = {
            "iss": issuer or self.issuer,
            "aud": audience,
            "iat": issued,
            "nbf": issued,
            "exp": issued + int(lifetime_s),
            **(claims or {}),
        }
        return jwt.encode(payload, self._private, algorithm="RS256", headers={"kid": self.key_id})

    def jwks(self) -> dict[str, Any]:
        """The public half as a JSON Web Key Set."""
        public: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self._private.public_key()))
        public.update({"kid": self.key_id, "use": "sig", "alg": "RS256"})
        return {"keys": [public]}
