"""Generated secrets: strong, distinct, owner-only, never regenerated over an existing one."""

from __future__ import annotations

import os
import stat

import pyrage

from deploy.generate_secrets import SECRET_FILES, ensure_secrets, main
from shared.config import TEMPO_PLACEHOLDER_SECRET, Secret, signing_secret_problems


def test_secrets_are_created_owner_only_strong_and_distinct(tmp_path):
    folder = tmp_path / "secrets"
    paths = ensure_secrets(folder)
    assert set(paths) == set(SECRET_FILES)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    values = set()
    for name, path in paths.items():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        value = path.read_text()
        assert value != TEMPO_PLACEHOLDER_SECRET
        assert len(value) >= 32, name
        values.add(value)
    assert len(values) == len(paths)
    for name in ("jwt_key", "internal_key"):
        assert signing_secret_problems(name, Secret(paths[name].read_text())) == []


def test_existing_secrets_are_kept_and_missing_ones_filled_in(tmp_path):
    first = {name: path.read_text() for name, path in ensure_secrets(tmp_path).items()}
    (tmp_path / "internal_key").unlink()
    second = {name: path.read_text() for name, path in ensure_secrets(tmp_path).items()}
    assert second["jwt_key"] == first["jwt_key"]
    assert second["internal_key"] != first["internal_key"]


def test_the_command_adds_a_backup_key_pair_and_shares_files_with_the_containers(tmp_path,
                                                                                  capsys):
    assert main([str(tmp_path)]) == 0
    recipient = (tmp_path / "backup_recipient").read_text().strip()
    identity = pyrage.x25519.Identity.from_str((tmp_path / "backup_identity").read_text().strip())
    assert str(identity.to_public()) == recipient
    assert stat.S_IMODE((tmp_path / "backup_identity").stat().st_mode) == 0o600
    if os.geteuid() == 0:
        # Readable by the containers' group only, never by everyone.
        mode = stat.S_IMODE((tmp_path / "jwt_key").stat().st_mode)
        assert mode == 0o440
        assert (tmp_path / "jwt_key").stat().st_gid == 10001
    assert "store it offline" in capsys.readouterr().err
