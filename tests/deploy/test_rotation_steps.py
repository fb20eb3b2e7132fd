"""The rotation steps on real secret files: what is written, in which order services
restart, when dropping is allowed, and that no command shown or run carries a secret."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deploy import rotate
from deploy.generate_secrets import ensure_secrets
from tests.support import ROOT


class Recorder:
    """A deployment that remembers what it was asked to do (the services are elsewhere)."""

    def __init__(self, fail_password: bool = False) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.fail_password = fail_password

    def role_name(self, service: str) -> str:
        return f"role_{service}"

    async def restart(self, service: str) -> None:
        self.calls.append(("restart", service))

    async def set_role_password(self, role: str, password: str) -> None:
        if self.fail_password:
            raise OSError("database unreachable")
        self.calls.append(("password", role, password))

    async def record(self, outcome: str, detail: dict[str, Any]) -> None:
        self.records.append((outcome, detail))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    ensure_secrets(tmp_path / "secrets")
    return tmp_path / "secrets"


def test_jwt_rotation_moves_the_key_and_restarts_verifiers_before_the_signer(folder):
    old = (folder / "jwt_key").read_text()
    deployment = Recorder()
    asyncio.run(rotate.rotate_key(folder, "jwt", deployment, now=1000))
    new = (folder / "jwt_key").read_text()
    assert new != old
    assert len(new) >= 32
    assert rotate.read_list(folder / "jwt_previous_keys") == [old]
    # media holds no users' token key, so a change of it is none of its business.
    assert deployment.calls == [("restart", "gateway"), ("restart", "auth")]
    assert deployment.records == [("success", {"secret": "jwt", "step": "rotate"})]
    for name in ("jwt_key", "jwt_previous_keys"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600


def test_internal_rotation_restarts_the_verifiers_first(folder):
    deployment = Recorder()
    asyncio.run(rotate.rotate_key(folder, "internal", deployment))
    assert [call[1] for call in deployment.calls] == ["auth", "media", "gateway"]


def test_a_second_rotation_keeps_every_key_that_may_still_sign_live_tokens(folder):
    first = (folder / "jwt_key").read_text()
    asyncio.run(rotate.rotate_key(folder, "jwt", Recorder()))
    second = (folder / "jwt_key").read_text()
    asyncio.run(rotate.rotate_key(folder, "jwt", Recorder()))
    assert rotate.read_list(folder / "jwt_previous_keys") == [second, first]


def test_dropping_waits_for_the_longest_token_then_empties_the_list(folder):
    asyncio.run(rotate.rotate_key(folder, "jwt", Recorder(), now=1000))
    deployment = Recorder()
    week = 7 * 86400
    with pytest.raises(rotate.RotationError, match="may still be valid"):
        asyncio.run(rotate.drop_previous(folder, "jwt", deployment, max_token_seconds=week,
                                         now=1000 + week))
    assert deployment.calls == []
    assert deployment.records == []
    asyncio.run(rotate.drop_previous(folder, "jwt", deployment, max_token_seconds=week,
                                     now=1000 + week + rotate.DROP_MARGIN_SECONDS))
    assert rotate.read_list(folder / "jwt_previous_keys") == []
    assert deployment.records == [("success", {"secret": "jwt", "step": "drop_previous",
                                               "forced": False})]


def test_dropping_without_a_recorded_rotation_needs_force(folder):
    with pytest.raises(rotate.RotationError, match="unknown time"):
        asyncio.run(rotate.drop_previous(folder, "internal", Recorder(), max_token_seconds=60))


def test_database_rotation_writes_each_password_then_restarts_that_service(folder):
    deployment = Recorder()
    asyncio.run(rotate.rotate_database_passwords(folder, deployment))
    for service in rotate.SERVICES:
        password = (folder / f"db_{service}_password").read_text()
        assert ("password", f"role_{service}", password) in deployment.calls
    assert [call[0] for call in deployment.calls] == ["password", "restart"] * 3
    assert [detail["secret"] for _, detail in deployment.records] == [
        "db_auth_password", "db_media_password", "db_gateway_password"]
    assert all(password not in json.dumps(deployment.records)
               for _, _, password in (c for c in deployment.calls if c[0] == "password"))


def test_a_failed_password_change_keeps_the_old_file_and_is_recorded(folder):
    old = (folder / "db_auth_password").read_text()
    deployment = Recorder(fail_password=True)
    with pytest.raises(OSError, match="unreachable"):
        asyncio.run(rotate.rotate_database_passwords(folder, deployment))
    assert (folder / "db_auth_password").read_text() == old
    assert deployment.calls == []
    assert deployment.records == [("failure", {"secret": "db_auth_password",
                                               "step": "rotate"})]


def test_compose_commands_never_show_a_password(folder):
    shown: list[str] = []
    compose = rotate.ComposeDeployment(ROOT, dry_run=True, echo=shown.append)
    asyncio.run(rotate.rotate_database_passwords(folder, compose))
    text = "\n".join(shown)
    for service in rotate.SERVICES:
        assert (folder / f"db_{service}_password").read_text() not in text
    assert "docker compose up --detach --no-deps --force-recreate --wait auth" in text
    assert "ALTER ROLE \"tempo_media\" PASSWORD '********'" in text


def test_the_dry_run_command_changes_no_file(folder):
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    done = subprocess.run([sys.executable, "-m", "deploy.rotate", "jwt", "--compose",
                           "--dry-run", "--secrets", str(folder)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ})
    assert done.returncode == 0, done.stderr
    assert "docker compose up --detach --no-deps --force-recreate --wait gateway" in done.stdout
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


def test_replacing_a_secret_keeps_its_mode(folder):
    path = folder / "jwt_key"
    path.chmod(0o440)
    rotate.replace_secret(path, "x" * 40)
    assert stat.S_IMODE(path.stat().st_mode) == 0o440
    assert path.read_text() == "x" * 40
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
