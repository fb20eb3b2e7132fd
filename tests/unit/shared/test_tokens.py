"""JWT rules: HS256 only, every claim required, the key picked by kid, zero leeway."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from shared.config import KeySet, Secret
from shared.tokens import TokenCodec, TokenError, key_id

KEY = "k3Jx9Qw7Lm2Zp5Rt8Yv1Bn4Hc6Df0Ga-_Es"
OLD_KEY = "Zq8Wx2Ce4Rv6Tb8Yn0Um1Ik3Ol5Pa7Sd9Fg"


def codec(current: str = KEY, previous: tuple[str, ...] = ()) -> TokenCodec:
    keys = KeySet(Secret(current), tuple(Secret(k) for k in previous))
    return TokenCodec(keys, issuer="Tempo", audience="Tempo", lifetime_seconds=3600)


def claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    payload: dict[str, object] = {"iss": "Tempo", "aud": "Tempo", "sub": "user-1",
                                  "jti": "abc", "iat": now, "exp": now + 600}
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def forge(payload: dict[str, object], key: str = KEY, alg: str = "HS256",
          kid: str | None = None) -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid or key_id(key)})


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_issued_token_verifies_with_its_claims() -> None:
    token, issued = codec().issue("user-1", extra={"x": 1})
    verified = codec().verify(token)
    assert verified.subject == "user-1"
    assert verified.token_id == issued.token_id
    assert verified.expires_at - verified.issued_at == 3600
    assert verified.extra == {"x": 1}


def test_alg_none_is_refused() -> None:
    token = f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': key_id(KEY)})}.{b64(claims())}."
    with pytest.raises(TokenError):
        codec().verify(token)


def test_other_hmac_algorithm_is_refused() -> None:
    long_key = KEY * 2
    token = forge(claims(), key=long_key, alg="HS512", kid=key_id(long_key))
    with pytest.raises(TokenError):
        codec(long_key).verify(token)


def test_rs256_header_with_the_hmac_key_is_refused() -> None:
    header = b64({"alg": "RS256", "typ": "JWT", "kid": key_id(KEY)})
    token = f"{header}.{b64(claims())}.c2lnbmF0dXJl"
    with pytest.raises(TokenError):
        codec().verify(token)


def test_wrong_key_is_refused() -> None:
    with pytest.raises(TokenError):
        codec().verify(forge(claims(), key=OLD_KEY, kid=key_id(KEY)))


@pytest.mark.parametrize("claim", ["iss", "aud", "exp", "iat", "sub", "jti"])
def test_missing_claim_is_refused(claim: str) -> None:
    with pytest.raises(TokenError):
        codec().verify(forge(claims(**{claim: None})))


def test_wrong_issuer_and_audience_are_refused() -> None:
    with pytest.raises(TokenError):
        codec().verify(forge(claims(iss="Other")))
    with pytest.raises(TokenError):
        codec().verify(forge(claims(aud="Other")))


def test_expired_token_is_refused_without_leeway() -> None:
    now = int(time.time())
    with pytest.raises(TokenError):
        codec().verify(forge(claims(iat=now - 100, exp=now - 1)))


def test_token_issued_in_the_future_is_refused() -> None:
    now = int(time.time())
    with pytest.raises(TokenError):
        codec().verify(forge(claims(iat=now + 600, exp=now + 1200)))


def test_not_yet_valid_token_is_refused() -> None:
    now = int(time.time())
    with pytest.raises(TokenError):
        codec().verify(forge(claims(nbf=now + 600)))


@pytest.mark.parametrize("garbage", ["", "garbage", "a.b.c", "x" * 100_000])
def test_garbage_is_refused(garbage: str) -> None:
    with pytest.raises(TokenError):
        codec().verify(garbage)


def test_unknown_kid_is_refused() -> None:
    with pytest.raises(TokenError):
        codec().verify(forge(claims(), kid="0123456789abcdef"))


def test_previous_key_verifies_until_dropped() -> None:
    old_token, _ = codec(OLD_KEY).issue("user-1")
    rotated = codec(KEY, previous=(OLD_KEY,))
    assert rotated.verify(old_token).subject == "user-1"
    new_token, _ = rotated.issue("user-1")
    assert jwt.get_unverified_header(new_token)["kid"] == key_id(KEY)
    with pytest.raises(TokenError):
        codec(KEY).verify(old_token)


def test_string_claims_must_be_strings() -> None:
    with pytest.raises(TokenError):
        codec().verify(forge(claims(sub=123)))
