"""The media service's settings: MediaStorage__* on top of the common ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.media.settings import load_settings
from shared.config import SettingsError
from tests.support import service_env, strong_secret


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return service_env("postgresql://postgres@127.0.0.1:5432/x", jwt_key=strong_secret(),
                       internal_key=strong_secret(),
                       MediaStorage__RootPath=str(tmp_path / "media"))


def problems(environ: dict[str, str]) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ)
    return caught.value.problems


def test_defaults(env, tmp_path):
    settings = load_settings(env)
    assert settings.storage.root == tmp_path / "media"
    assert settings.storage.max_file_size_bytes == 52_428_800
    assert settings.storage.max_files_per_request == 20
    assert settings.storage.quota_bytes is None
    assert settings.common.port == 8082
    assert settings.common.service == "media"


def test_values_are_read(env):
    settings = load_settings({**env, "MediaStorage__MaxFileSizeBytes": "1000",
                              "MediaStorage__MaxFilesPerRequest": "3",
                              "MediaStorage__QuotaBytes": "5000000"})
    assert settings.storage.max_file_size_bytes == 1000
    assert settings.storage.max_files_per_request == 3
    assert settings.storage.quota_bytes == 5_000_000


def test_quota_zero_means_no_quota(env):
    assert load_settings({**env, "MediaStorage__QuotaBytes": "0"}).storage.quota_bytes is None


def test_root_is_required_in_production(env):
    del env["MediaStorage__RootPath"]
    assert any(p.startswith("MediaStorage__RootPath: is required") for p in problems(env))


def test_root_defaults_in_development_only(env):
    del env["MediaStorage__RootPath"]
    settings = load_settings({**env, "App__Environment": "development"})
    assert settings.storage.root.is_absolute()


@pytest.mark.parametrize("root", ["relative/media", "./media", "media"])
def test_root_must_be_absolute(env, root):
    assert "MediaStorage__RootPath: must be an absolute path" in problems(
        {**env, "MediaStorage__RootPath": root})


def test_root_must_not_climb(env):
    assert any("'..'" in p for p in problems({**env, "MediaStorage__RootPath": "/srv/../etc"}))


@pytest.mark.parametrize(("name", "value"), [
    ("MediaStorage__MaxFileSizeBytes", "0"), ("MediaStorage__MaxFileSizeBytes", "big"),
    ("MediaStorage__MaxFilesPerRequest", "0"), ("MediaStorage__QuotaBytes", "-1"),
])
def test_bad_numbers_are_problems(env, name, value):
    assert any(p.startswith(name) for p in problems({**env, name: value}))


def test_every_problem_is_reported_at_once(env):
    found = problems({**env, "Internal__SecretKey": "short", "MediaStorage__RootPath": "rel",
                      "MediaStorage__MaxFilesPerRequest": "x"})
    assert len(found) == 3


def test_media_starts_without_the_jwt_key(env):
    del env["JWT__SecretKey"]
    settings = load_settings(env)
    assert not hasattr(settings, "jwt")
    assert not hasattr(settings.common, "jwt")


def test_media_does_not_read_the_jwt_keys_at_all(env, tmp_path):
    # Values media would refuse if it read them: a short key, an unreadable file, both
    # forms at once, a weak previous key.
    load_settings({**env, "JWT__SecretKey": "short",
                   "JWT__SecretKey_FILE": str(tmp_path / "missing"),
                   "JWT__PreviousSecretKeys": "weak",
                   "JWT__ExpirationDays": "0"})
