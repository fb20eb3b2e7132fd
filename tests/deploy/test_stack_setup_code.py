"""``python -m deploy.stack --production`` hands auth the generated setup code (and prints
it); development mode, or a code given in the shell, is left alone."""

from __future__ import annotations

from pathlib import Path

from deploy.generate_secrets import SECRET_FILES, ensure_secrets
from deploy.stack import setup_code_env


def test_production_mode_gives_auth_the_generated_setup_code(tmp_path: Path) -> None:
    env, path = setup_code_env(tmp_path, production=True, overrides={})
    assert path == (tmp_path / "secrets" / "setup_code").resolve()
    assert env == {"auth": {"Auth__SetupCode_FILE": str(path)}}
    # The stack generates it with the other secrets before auth starts.
    assert "setup_code" in SECRET_FILES
    ensure_secrets(tmp_path / "secrets")
    assert len(path.read_text()) >= 16


def test_development_mode_asks_for_no_setup_code(tmp_path: Path) -> None:
    assert setup_code_env(tmp_path, production=False, overrides={}) == ({}, None)


def test_a_setup_code_given_in_the_shell_wins(tmp_path: Path) -> None:
    for name in ("Auth__SetupCode", "Auth__SetupCode_FILE"):
        assert setup_code_env(tmp_path, production=True,
                              overrides={name: "x" * 20}) == ({}, None)
