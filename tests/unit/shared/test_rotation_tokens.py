"""Key rotation at the token level: previous keys verify until dropped, kids are checked,
and the settings read previous keys with the same strength rules as current ones."""

from __future__ import annotations

import jwt
import pytest

from services.gateway.authentication import TokenVerifier
from shared.config import Env, KeySet, Secret, SettingsError, load_common, load_jwt
from shared.identity import internal_codec, mint_internal_token
from shared.tokens import TokenCodec, TokenError, key_id
from tests.support import service_env, strong_secret

OLD, NEW, ATTACKER = strong_secret(), strong_secret(), strong_secret()


def codec(current: str, *previous: str) -> TokenCodec:
    keys = KeySet(Secret(current), tuple(Secret(key) for key in previous))
    return TokenCodec(keys, issuer="tempo", audience="tempo-api", lifetime_seconds=3600)


def test_token_signed_with_previous_key_verifies_after_rotation() -> None:
    token, claims = codec(OLD).issue("user-1")
    assert codec(NEW, OLD).verify(token).token_id == claims.token_id


def test_token_signed_with_previous_key_fails_once_the_key_is_dropped() -> None:
    token, _ = codec(OLD).issue("user-1")
    with pytest.raises(TokenError, match="unknown key id"):
        codec(NEW).verify(token)


def test_new_tokens_are_signed_with_the_current_key_not_a_previous_one() -> None:
    token, _ = codec(NEW, OLD).issue("user-1")
    assert jwt.get_unverified_header(token)["kid"] == key_id(NEW)
    with pytest.raises(TokenError):
        codec(OLD).verify(token)


def _forge(key: str, kid: str | None) -> str:
    payload = {"iss": "tempo", "aud": "tempo-api", "sub": "user-1", "jti": "j",
               "iat": 2_000_000_000 - 10, "exp": 2_000_000_000 + 3600}
    headers = {} if kid is None else {"kid": kid}
    return jwt.encode(payload, key, algorithm="HS256", headers=headers)


@pytest.mark.parametrize("kid", [key_id(OLD), key_id(NEW)])
def test_forged_kid_naming_a_known_key_is_refused(kid: str) -> None:
    with pytest.raises(TokenError, match="invalid token"):
        codec(NEW, OLD).verify(_forge(ATTACKER, kid))


@pytest.mark.parametrize("kid", [None, "", key_id(ATTACKER), "../../etc/passwd", "0" * 16])
def test_unknown_or_missing_kid_is_refused(kid: str | None) -> None:
    with pytest.raises(TokenError, match="unknown key id"):
        codec(NEW, OLD).verify(_forge(NEW, kid))


def test_previous_key_token_under_the_current_keys_kid_is_refused() -> None:
    with pytest.raises(TokenError, match="invalid token"):
        codec(NEW, OLD).verify(_forge(OLD, key_id(NEW)))


def test_gateway_verifier_accepts_both_key_generations_and_refuses_dropped_ones() -> None:
    old_token, _ = codec(OLD).issue("user-1")
    new_token, _ = codec(NEW).issue("user-1")
    during = TokenVerifier(codec(NEW, OLD), max_entries=10)
    assert during.verify(old_token).subject == "user-1"
    assert during.verify(new_token).subject == "user-1"
    # A restarted gateway starts with an empty cache: the dropped key is not remembered.
    after = TokenVerifier(codec(NEW), max_entries=10)
    with pytest.raises(TokenError):
        after.verify(old_token)
    assert after.verify(new_token).subject == "user-1"


def test_internal_identity_from_previous_internal_key_verifies_until_dropped() -> None:
    minted = mint_internal_token(internal_codec(KeySet(Secret(OLD)), "media"),
                                 audience="media", user_id="user-1", session_id="s",
                                 client_ip="203.0.113.9", user_agent=None)
    rotated = internal_codec(KeySet(Secret(NEW), (Secret(OLD),)), "media")
    assert rotated.verify(minted).subject == "user-1"
    with pytest.raises(TokenError):
        internal_codec(KeySet(Secret(NEW)), "media").verify(minted)


def _load(service: str = "gateway", **extra: str):
    env = Env(service_env("postgresql://u@127.0.0.1/db", jwt_key=NEW,
                          internal_key=strong_secret(), **extra))
    jwt = load_jwt(env, load_common(env, service, 8080))
    if env.problems:
        raise SettingsError(env.problems)
    return jwt


def test_previous_keys_load_from_a_file_one_per_line(tmp_path) -> None:
    other = strong_secret()
    path = tmp_path / "jwt_previous_keys"
    path.write_text(f"{OLD}\n{other}\n")
    jwt = _load(JWT__PreviousSecretKeys_FILE=str(path))
    assert [key.reveal() for key in jwt.keys.previous] == [OLD, other]


def test_an_empty_previous_keys_file_means_no_previous_keys(tmp_path) -> None:
    path = tmp_path / "jwt_previous_keys"
    path.write_text("")
    assert _load(JWT__PreviousSecretKeys_FILE=str(path)).keys.previous == ()


@pytest.mark.parametrize("weak", ["short", "a" * 40])
def test_a_weak_previous_key_is_refused_like_a_current_one(weak: str) -> None:
    with pytest.raises(SettingsError, match=r"JWT__PreviousSecretKeys\[1\]"):
        _load(JWT__PreviousSecretKeys=f"{OLD},{weak}")


def test_a_previous_internal_key_may_not_be_a_jwt_key() -> None:
    with pytest.raises(SettingsError, match="Internal__SecretKey: must differ"):
        # auth holds both: the users' key it signs with, the identity keys it verifies.
        _load("auth", Internal__PreviousSecretKeys=NEW)
