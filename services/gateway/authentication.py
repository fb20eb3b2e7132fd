"""The ``authToken`` cookie: verified once, then remembered until it expires.

A repeat request with the same token costs a dictionary lookup instead of an HMAC and a
JSON parse. The revoked set is consulted on every request, cache hit or not, and a
revocation also evicts the token from the cache.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from shared.tokens import Claims, TokenCodec, TokenError

COOKIE_NAME = "authToken"
# A real token is a few hundred bytes; anything far larger is refused without parsing.
MAX_TOKEN_LENGTH = 4096


class TokenVerifier:
    def __init__(self, codec: TokenCodec, max_entries: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._codec = codec
        self._max = max_entries
        self._clock = clock
        self._cache: OrderedDict[str, Claims] = OrderedDict()
        self._by_jti: dict[str, str] = {}

    def verify(self, token: str) -> Claims:
        """The token's claims; ``TokenError`` when it is not acceptable (revocation aside)."""
        claims = self._cache.get(token)
        now = self._clock()
        if claims is not None:
            if claims.expires_at > now:
                return claims
            self._forget(token)
            raise TokenError("expired")
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenError("token too long")
        claims = self._codec.verify(token)
        self._remember(token, claims)
        return claims

    def evict_jti(self, jti: str) -> None:
        token = self._by_jti.get(jti)
        if token is not None:
            self._forget(token)

    def _remember(self, token: str, claims: Claims) -> None:
        cache = self._cache
        cache[token] = claims
        self._by_jti[claims.token_id] = token
        while len(cache) > self._max:
            oldest, old_claims = cache.popitem(last=False)
            if self._by_jti.get(old_claims.token_id) == oldest:
                del self._by_jti[old_claims.token_id]

    def _forget(self, token: str) -> None:
        claims = self._cache.pop(token, None)
        if claims is not None and self._by_jti.get(claims.token_id) == token:
            del self._by_jti[claims.token_id]

    def __len__(self) -> int:
        return len(self._cache)


def cookie_token(cookie_header: str | None) -> str | None:
    """The ``authToken`` value from a Cookie header, without parsing the other cookies."""
    if not cookie_header or COOKIE_NAME not in cookie_header:
        return None
    for part in cookie_header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name == COOKIE_NAME:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value or None
    return None
