"""Every setting the services read is documented in the README's table and set in the
compose file's environment; nothing documented there is unknown to the code."""

from __future__ import annotations

import ast
import contextlib
import re
from pathlib import Path

import pytest
import yaml

from shared import config
from tests.support import ROOT, service_env, strong_secret

SETTING = re.compile(r"[A-Z][A-Za-z]*__[A-Z][A-Za-z]*")
README_ROW = re.compile(r"^\|\s*`([A-Z][A-Za-z]*__[A-Z][A-Za-z]*)`")


def literal_settings() -> set[str]:
    """String constants in the services' and shared code shaped like ``Section__Key``."""
    names = set()
    for folder in ("services", "shared"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and SETTING.fullmatch(node.value):
                    names.add(node.value)
    return names


def read_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> set[str]:
    """The names each service's loader actually reads, recorded while it loads (this
    catches names built at run time, such as the previous-keys lists)."""
    from services.auth.settings import load_settings as load_auth
    from services.gateway.settings import load_settings as load_gateway
    from services.media.settings import load_settings as load_media

    read: set[str] = set()
    raw, secret = config.Env.raw, config.Env.secret

    def recording_raw(self, name):
        read.add(name)
        return raw(self, name)

    def recording_secret(self, name):
        read.add(name)
        return secret(self, name)

    monkeypatch.setattr(config.Env, "raw", recording_raw)
    monkeypatch.setattr(config.Env, "secret", recording_secret)
    env = service_env("postgresql://tempo@127.0.0.1:5432/tempo", jwt_key=strong_secret(),
                      internal_key=strong_secret(),
                      MediaStorage__RootPath=str(tmp_path))
    for load in (load_auth, load_media, load_gateway):
        # A problem in this environment only stops the service; every name was read.
        with contextlib.suppress(config.SettingsError):
            load(env)
    return {name for name in read if SETTING.fullmatch(name)}


@pytest.fixture(scope="module")
def code_settings(tmp_path_factory) -> set[str]:
    monkeypatch = pytest.MonkeyPatch()
    try:
        names = read_settings(monkeypatch, tmp_path_factory.mktemp("media"))
    finally:
        monkeypatch.undo()
    return names | literal_settings()


def readme_settings() -> set[str]:
    names = set()
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        match = README_ROW.match(line)
        if match:
            names.add(match.group(1))
    return names


def compose_settings() -> set[str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    names = set()
    for name, service in compose["services"].items():
        if name == "backup":
            continue
        for key in (service.get("environment") or {}):
            if "__" in key:
                names.add(key.removesuffix("_FILE"))
    return names


def test_the_code_reads_settings_at_all(code_settings):
    # Guards the recorder itself: a broken scan would make the tests below pass vacuously.
    assert {"JWT__SecretKey", "JWT__PreviousSecretKeys", "Database__Url",
            "MediaStorage__RootPath", "Upstreams__Auth", "Auth__BcryptCost"} <= code_settings


def test_every_setting_is_documented_in_the_readme(code_settings):
    assert sorted(code_settings - readme_settings()) == []


def test_every_setting_is_in_the_compose_environment(code_settings):
    assert sorted(code_settings - compose_settings()) == []


def test_nothing_documented_in_the_readme_is_unknown_to_the_code(code_settings):
    assert sorted(readme_settings() - code_settings) == []


def test_nothing_in_the_compose_environment_is_unknown_to_the_code(code_settings):
    assert sorted(compose_settings() - code_settings) == []
