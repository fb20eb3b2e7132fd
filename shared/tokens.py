"""JWT issue and verify: HS256 only, a key id on every token, every claim required.

Tokens carry ``kid``, derived from the key itself, so that a key set can hold the current
key and previous ones during a rotation: new tokens use the current key; tokens signed with
a previous key verify until they expire; an unknown ``kid`` is refused.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

from shared.config import KeySet

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "sub", "jti")


class TokenError(Exception):
    """The token is not acceptable. The message is for logs; clients get a generic 401."""


def key_id(key: str) -> str:
    # A truncated hash identifies the key without revealing anything usable about it.
    return hashlib.sha256(b"tempo-kid\x00" + key.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Claims:
    subject: str
    token_id: str
    issued_at: int
    expires_at: int
    extra: dict[str, Any]


class TokenCodec:
    """Signs and verifies tokens for one issuer and audience with a key set."""

    def __init__(self, keys: KeySet, *, issuer: str, audience: str, lifetime_seconds: int,
                 leeway_seconds: int = 0) -> None:
        self._signing_key = keys.current.reveal()
        self._signing_kid = key_id(self._signing_key)
        self._keys = {key_id(k.reveal()): k.reveal() for k in (keys.current, *keys.previous)}
        self.issuer = issuer
        self.audience = audience
        self.lifetime_seconds = lifetime_seconds
        self.leeway_seconds = leeway_seconds

    def issue(self, subject: str, *, now: float | None = None, token_id: str | None = None,
              lifetime_seconds: int | None = None, audience: str | None = None,
              extra: dict[str, Any] | None = None) -> tuple[str, Claims]:
        issued_at = int(time.time() if now is None else now)
        expires_at = issued_at + (lifetime_seconds or self.lifetime_seconds)
        token_id = token_id or secrets.token_hex(16)
        payload: dict[str, Any] = {
            **(extra or {}),
            "iss": self.issuer,
            "aud": audience or self.audience,
            "sub": subject,
            "jti": token_id,
            "iat": issued_at,
            "exp": expires_at,
        }
        token = jwt.encode(payload, self._signing_key, algorithm=ALGORITHM,
                           headers={"kid": self._signing_kid})
        return token, Claims(subject, token_id, issued_at, expires_at, dict(extra or {}))

    def verify(self, token: str, *, audience: str | None = None) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError(f"malformed token: {type(exc).__name__}") from None
        if header.get("alg") != ALGORITHM:
            raise TokenError("algorithm not allowed")
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenError("unknown key id")
        try:
            payload = jwt.decode(
                token, key, algorithms=[ALGORITHM],
                audience=audience or self.audience, issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": list(REQUIRED_CLAIMS), "verify_signature": True},
            )
        except jwt.PyJWTError as exc:
            raise TokenError(f"invalid token: {type(exc).__name__}") from None
        subject, token_id = payload["sub"], payload["jti"]
        if not isinstance(subject, str) or not isinstance(token_id, str):
            raise TokenError("sub and jti must be strings")
        issued_at, expires_at = payload["iat"], payload["exp"]
        if not isinstance(issued_at, int) or not isinstance(expires_at, int):
            raise TokenError("iat and exp must be integers")
        extra = {k: v for k, v in payload.items() if k not in REQUIRED_CLAIMS}
        return Claims(subject, token_id, issued_at, expires_at, extra)
