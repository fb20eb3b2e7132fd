"""Each service reads exactly the secrets of its row in ``SERVICE_SECRETS``: a key is held
only where it signs or verifies, so a service that never needs a key cannot leak it."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.auth.settings import load_settings as load_auth
from services.gateway.settings import load_settings as load_gateway
from services.media.settings import load_settings as load_media
from shared import config
from shared.config import SERVICE_SECRETS
from tests.support import service_env, strong_secret

LOADERS = {"auth": load_auth, "media": load_media, "gateway": load_gateway}


def secrets_read(monkeypatch: pytest.MonkeyPatch, service: str, tmp_path: Path) -> set[str]:
    read: set[str] = set()
    secret = config.Env.secret

    def recording_secret(self, name):
        read.add(name)
        return secret(self, name)

    monkeypatch.setattr(config.Env, "secret", recording_secret)
    env = service_env("postgresql://tempo@127.0.0.1:5432/tempo", jwt_key=strong_secret(),
                      internal_key=strong_secret(), MediaStorage__RootPath=str(tmp_path),
                      Database__Password=strong_secret(),
                      JWT__PreviousSecretKeys=strong_secret(),
                      Internal__PreviousSecretKeys=strong_secret())
    LOADERS[service](env)
    # The URL is read like a secret (it may carry a password) but is configuration.
    return read - {"Database__Url"}


@pytest.mark.parametrize("service", sorted(LOADERS))
def test_each_service_reads_exactly_its_own_secrets(monkeypatch, service, tmp_path) -> None:
    assert secrets_read(monkeypatch, service, tmp_path) == set(SERVICE_SECRETS[service])


def test_the_users_token_key_is_held_where_tokens_are_signed_or_verified_only() -> None:
    holders = {name for name, held in SERVICE_SECRETS.items() if config.JWT_KEY in held}
    assert holders == {"auth", "gateway"}
    # Only the gateway verifies users' tokens; only auth and media verify identity tokens.
    assert {n for n, held in SERVICE_SECRETS.items()
            if config.JWT_PREVIOUS_KEYS in held} == {"gateway"}
    assert {n for n, held in SERVICE_SECRETS.items()
            if config.INTERNAL_PREVIOUS_KEYS in held} == {"auth", "media"}
