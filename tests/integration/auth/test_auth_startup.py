"""``python -m services.auth`` refuses to start on each bad setting: exit code 2, one line
per problem naming the variable, and never the offending value."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.config import TEMPO_PLACEHOLDER_SECRET
from tests.support import ROOT, strong_secret, with_password

JWT = strong_secret()
INTERNAL = strong_secret()
DB = "postgresql://tempo:{password}@127.0.0.1:5432/tempo"
GOOD = {
    "JWT__SecretKey": JWT,
    "Internal__SecretKey": INTERNAL,
    "Database__Url": with_password("postgresql://tempo@127.0.0.1:5432/tempo",
                                   "Db-Password-Long-Enough-1"),
}


def start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": os.environ.get("PATH", ""), **env}
    return subprocess.run([sys.executable, "-m", "services.auth"], cwd=ROOT, env=clean,
                          capture_output=True, text=True, timeout=60, check=False)


def db_url(password: str) -> str:
    return DB.format(password=password)


# (case id, changes to the good environment, variable named, value that must not show)
BAD_SETTINGS = [
    ("jwt-missing", {"JWT__SecretKey": None}, "JWT__SecretKey", None),
    ("jwt-placeholder", {"JWT__SecretKey": TEMPO_PLACEHOLDER_SECRET}, "JWT__SecretKey",
     TEMPO_PLACEHOLDER_SECRET),
    ("jwt-short", {"JWT__SecretKey": "Sh0rt-Secret-Value-xyz"}, "JWT__SecretKey",
     "Sh0rt-Secret-Value-xyz"),
    ("jwt-weak", {"JWT__SecretKey": "ab" * 24}, "JWT__SecretKey", "ab" * 24),
    ("jwt-file-unreadable", {"JWT__SecretKey": None,
                             "JWT__SecretKey_FILE": "/nonexistent/jwt-secret"},
     "JWT__SecretKey_FILE", None),
    ("internal-missing", {"Internal__SecretKey": None}, "Internal__SecretKey", None),
    ("internal-short", {"Internal__SecretKey": "Sh0rt-Internal-Value"}, "Internal__SecretKey",
     "Sh0rt-Internal-Value"),
    ("internal-equals-jwt", {"Internal__SecretKey": JWT}, "Internal__SecretKey", JWT),
    ("database-missing", {"Database__Url": None}, "Database__Url", None),
    ("database-not-postgres", {"Database__Url": "mysql://u:Secret-Password-Long-1@h/db"},
     "Database__Url", "Secret-Password-Long-1"),
    ("database-empty-password", {"Database__Url": "postgresql://tempo@127.0.0.1/tempo"},
     "Database__Url", None),
    ("database-default-password", {"Database__Url": db_url("postgres")}, "Database__Url",
     db_url("postgres")),
    ("database-password-password", {"Database__Url": db_url("password")}, "Database__Url",
     db_url("password")),
    ("database-short-password", {"Database__Url": db_url("Tiny-Pass-9")}, "Database__Url",
     "Tiny-Pass-9"),
    ("environment-unknown", {"App__Environment": "staging-xyz"}, "App__Environment",
     "staging-xyz"),
    ("bcrypt-cost-low", {"Auth__BcryptCost": "9"}, "Auth__BcryptCost", "9"),
    ("bcrypt-cost-high", {"Auth__BcryptCost": "17"}, "Auth__BcryptCost", "17"),
    ("bcrypt-cost-not-a-number", {"Auth__BcryptCost": "twelve"}, "Auth__BcryptCost",
     "twelve"),
    ("password-min-length-below-8", {"Auth__PasswordMinLength": "7"},
     "Auth__PasswordMinLength", "7"),
    ("cookie-insecure-in-production", {"Auth__CookieSecure": "false"}, "Auth__CookieSecure",
     None),
    ("cookie-secure-not-a-bool", {"Auth__CookieSecure": "maybe-so"}, "Auth__CookieSecure",
     "maybe-so"),
    ("lockout-threshold-zero", {"Auth__LockoutThreshold": "0"}, "Auth__LockoutThreshold",
     None),
    ("lockout-window-zero", {"Auth__LockoutWindowMinutes": "0"},
     "Auth__LockoutWindowMinutes", None),
    ("lockout-max-below-window", {"Auth__LockoutWindowMinutes": "30",
                                  "Auth__LockoutMaxMinutes": "20"},
     "Auth__LockoutMaxMinutes", None),
    ("hash-workers-zero", {"Auth__HashWorkers": "0"}, "Auth__HashWorkers", None),
    ("hash-queue-negative", {"Auth__HashQueueSize": "-5"}, "Auth__HashQueueSize", "-5"),
    ("server-port-out-of-range", {"Server__Port": "70000"}, "Server__Port", "70000"),
]


@pytest.mark.parametrize(("changes", "variable", "value"),
                         [case[1:] for case in BAD_SETTINGS],
                         ids=[case[0] for case in BAD_SETTINGS])
def test_refuses_to_start_on_a_bad_setting(changes: dict[str, str | None], variable: str,
                                           value: str | None) -> None:
    env = {**GOOD, **changes}
    env = {name: setting for name, setting in env.items() if setting is not None}
    result = start(env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines, "no explanation printed"
    assert any(line.startswith(f"auth: configuration error: {variable}:") for line in lines), \
        lines
    output = result.stdout + result.stderr
    if value is not None:
        assert value not in output
    for secret in (JWT, INTERNAL, "Db-Password-Long-Enough-1"):
        assert secret not in output


def test_every_problem_is_reported_at_once() -> None:
    result = start({"JWT__SecretKey": TEMPO_PLACEHOLDER_SECRET, "Auth__BcryptCost": "99",
                    "Auth__PasswordMinLength": "4"})
    assert result.returncode == 2
    named = [line.split(":")[2].strip() for line in result.stderr.strip().splitlines()]
    for variable in ("JWT__SecretKey", "Internal__SecretKey", "Database__Url",
                     "Auth__BcryptCost", "Auth__PasswordMinLength"):
        assert variable in named, result.stderr
    assert TEMPO_PLACEHOLDER_SECRET not in result.stderr


def test_development_may_keep_a_weak_database_password_and_turn_secure_off() -> None:
    from services.auth.settings import load_settings

    settings = load_settings({**GOOD, "App__Environment": "development",
                              "Database__Url": db_url("postgres"),
                              "Auth__CookieSecure": "false"})
    assert settings.cookie_secure is False
    assert settings.common.development
