"""The revoked set and its grace period, notification parsing, the verified-token cache."""

from __future__ import annotations

import time

import pytest

from services.gateway.authentication import TokenVerifier, cookie_tokens
from services.gateway.revocation import RevokedSet, parse_notification
from shared.config import KeySet, Secret
from shared.tokens import TokenCodec, TokenError
from tests.support import AUTH_COOKIE, DEV_AUTH_COOKIE

KEY = "k" * 20 + "0123456789abcdefghij"


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def revoked_set(grace: float = 30.0) -> tuple[RevokedSet, Clock, Clock]:
    wall, mono = Clock(1_700_000_000.0), Clock(50.0)
    return RevokedSet(grace, wall=wall, monotonic=mono), wall, mono


def test_nothing_is_decided_before_the_first_load() -> None:
    revoked, _wall, _mono = revoked_set()
    assert not revoked.usable()
    revoked.disconnected()
    assert not revoked.usable()


def test_load_drops_expired_entries_and_announces_the_rest() -> None:
    revoked, wall, _mono = revoked_set()
    heard: list[str] = []
    revoked.on_revoke(heard.append)
    revoked.replace([("live", wall.now + 60), ("dead", wall.now - 1)])
    assert "live" in revoked
    assert "dead" not in revoked
    assert heard == ["live"]
    assert revoked.usable()


def test_notifications_add_and_prune_forgets_expired() -> None:
    revoked, wall, _mono = revoked_set()
    revoked.replace([])
    revoked.add("a", wall.now + 10)
    revoked.add("b", wall.now - 10)  # already expired: nothing to refuse
    assert "a" in revoked
    assert "b" not in revoked
    wall.now += 11
    assert revoked.prune() == 1
    assert len(revoked) == 0


def test_grace_period_then_fail_closed_then_recovery() -> None:
    revoked, _wall, mono = revoked_set(grace=30.0)
    revoked.replace([])
    revoked.disconnected()
    mono.now += 30.0
    assert revoked.usable()
    mono.now += 0.01
    assert not revoked.usable()
    revoked.disconnected()  # repeated losses do not restart the grace period
    assert not revoked.usable()
    revoked.replace([])
    assert revoked.usable()


@pytest.mark.parametrize(("payload", "parsed"), [
    ('{"jti": "abc", "expiresAt": 1700000000}', ("abc", 1_700_000_000.0)),
    ('{"jti": "abc", "expiresAt": 1.5}', ("abc", 1.5)),
    ('{"jti": "", "expiresAt": 1}', None),
    ('{"jti": 5, "expiresAt": 1}', None),
    ('{"jti": "abc", "expiresAt": true}', None),
    ('{"jti": "abc"}', None),
    ('["abc"]', None),
    ("not json", None),
])
def test_parse_notification(payload: str, parsed: tuple[str, float] | None) -> None:
    assert parse_notification(payload) == parsed


def codec() -> TokenCodec:
    return TokenCodec(KeySet(Secret(KEY)), issuer="Tempo", audience="Tempo",
                      lifetime_seconds=3600)


def test_verified_tokens_are_cached_until_expiry_and_evicted_by_jti() -> None:
    clock = Clock(time.time())
    verifier = TokenVerifier(codec(), max_entries=2, clock=clock)
    token, claims = codec().issue("user", now=clock.now)
    assert verifier.verify(token) == claims
    assert len(verifier) == 1
    assert verifier.verify(token) is verifier.verify(token)  # served from the cache
    verifier.evict_jti(claims.token_id)
    assert len(verifier) == 0
    verifier.verify(token)
    clock.now += 3600
    with pytest.raises(TokenError):
        verifier.verify(token)
    assert len(verifier) == 0


def test_verifier_cache_is_bounded() -> None:
    verifier = TokenVerifier(codec(), max_entries=2)
    for index in range(5):
        verifier.verify(codec().issue(f"user-{index}")[0])
    assert len(verifier) == 2


def test_overlong_token_is_refused_without_parsing() -> None:
    with pytest.raises(TokenError, match="too long"):
        TokenVerifier(codec(), 10).verify("x" * 5000)


@pytest.mark.parametrize(("header", "tokens"), [
    (None, []),
    ("", []),
    ("theme=dark", []),
    ("__Host-authToken=abc", ["abc"]),
    ("theme=dark; __Host-authToken=abc; other=1", ["abc"]),
    ('__Host-authToken="abc"', ["abc"]),
    ("x__Host-authToken=abc", []),
    ("__Host-authToken=", []),
    # A planted or stale cookie of the bare name is not the production cookie.
    ("authToken=planted; __Host-authToken=abc", ["abc"]),
    ("__Host-authToken=; __Host-authToken=forged; __Host-authToken=abc",
     ["forged", "abc"]),
])
def test_cookie_tokens(header: str | None, tokens: list[str]) -> None:
    assert cookie_tokens(header, AUTH_COOKIE) == tokens


def test_development_reads_the_bare_name_only() -> None:
    assert cookie_tokens("__Host-authToken=a; authToken=b", DEV_AUTH_COOKIE) == ["b"]


def test_a_header_full_of_cookies_by_the_name_yields_only_a_few_candidates() -> None:
    header = "; ".join(f"{AUTH_COOKIE}=t{index}" for index in range(500))
    assert cookie_tokens(header, AUTH_COOKIE) == ["t0", "t1", "t2", "t3"]
