"""The sign-in cookie (``__Host-authToken``, or ``authToken`` in plain-HTTP development):
verified once, then remembered until it expires.

A repeat request with the same token costs a dictionary lookup instead of an HMAC and a
JSON parse. The revoked set is consulted on every request, cache hit or not, and a
revocation also evicts the token from the cache.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from shared.tokens import Claims, TokenCodec, TokenError

# A real token is a few hundred bytes; anything far larger is refused without parsing.
MAX_TOKEN_LENGTH = 4096
# A Cookie header may carry several cookies of one name (a stale one, one set by a
# sibling host in development); each is tried, but only this many, so that a client
# cannot make one request cost hundreds of verifications.
MAX_COOKIE_CANDIDATES = 4


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


def cookie_tokens(cookie_header: str | None, name: str,
                  limit: int = MAX_COOKIE_CANDIDATES) -> list[str]:
    """The non-empty values of cookie ``name`` in a Cookie header, in order, at most
    ``limit`` of them; the other cookies are not parsed."""
    if not cookie_header or name not in cookie_header:
        return []
    found = []
    for part in cookie_header.split(";"):
        key, sep, value = part.strip().partition("=")
        if not sep or key != name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if value:
            found.append(value)
            if len(found) == limit:
                break
    return found
