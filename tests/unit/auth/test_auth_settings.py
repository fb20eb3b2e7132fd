"""load_settings: defaults, limits, and every problem collected at once."""

from __future__ import annotations

import pytest

from services.auth.settings import load_settings
from shared.config import SettingsError
from tests.support import strong_secret

BASE = {
    "JWT__SecretKey": strong_secret(),
    "Internal__SecretKey": strong_secret(),
    "Database__Url": "postgresql://tempo:Db-Password-Long-Enough-1@127.0.0.1/tempo",
}


def test_defaults() -> None:
    settings = load_settings(BASE)
    assert settings.bcrypt_cost == 12
    assert settings.password_min_length == 12
    assert settings.lockout_threshold == 5
    assert settings.lockout_window_seconds == 15 * 60
    assert settings.lockout_max_seconds == 24 * 3600
    assert settings.hash_queue_size == 32
    assert settings.hash_workers >= 1
    assert settings.cookie_secure is True
    assert settings.purge_interval_seconds == 3600
    assert settings.token_lifetime_seconds == 7 * 86400
    assert settings.common.port == 8081
    assert settings.common.service == "auth"


def test_auth_keys_are_read() -> None:
    settings = load_settings({**BASE, "Auth__BcryptCost": "14",
                              "Auth__PasswordMinLength": "16",
                              "Auth__LockoutThreshold": "3",
                              "Auth__LockoutWindowMinutes": "5",
                              "Auth__LockoutMaxMinutes": "60",
                              "Auth__HashWorkers": "3", "Auth__HashQueueSize": "7",
                              "Auth__SessionPurgeIntervalSeconds": "60",
                              "JWT__ExpirationDays": "3"})
    assert (settings.bcrypt_cost, settings.password_min_length) == (14, 16)
    assert settings.lockout_threshold == 3
    assert settings.lockout_window_seconds == 300
    assert settings.lockout_max_seconds == 3600
    assert (settings.hash_workers, settings.hash_queue_size) == (3, 7)
    assert settings.purge_interval_seconds == 60
    assert settings.token_lifetime_seconds == 3 * 86400


@pytest.mark.parametrize(("cost", "ok"), [("9", False), ("10", True), ("16", True),
                                          ("17", False), ("x", False)])
def test_bcrypt_cost_between_10_and_16(cost: str, ok: bool) -> None:
    env = {**BASE, "Auth__BcryptCost": cost}
    if ok:
        assert load_settings(env).bcrypt_cost == int(cost)
    else:
        with pytest.raises(SettingsError) as caught:
            load_settings(env)
        assert caught.value.problems[0].startswith("Auth__BcryptCost:")


@pytest.mark.parametrize("length", ["0", "7", "-1"])
def test_minimum_password_length_never_below_8(length: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**BASE, "Auth__PasswordMinLength": length})
    assert caught.value.problems == ["Auth__PasswordMinLength: must be at least 8"]


def test_minimum_password_length_of_8_is_allowed() -> None:
    assert load_settings({**BASE, "Auth__PasswordMinLength": "8"}).password_min_length == 8


def test_insecure_cookie_only_in_development() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**BASE, "Auth__CookieSecure": "false"})
    assert caught.value.problems[0].startswith("Auth__CookieSecure:")
    settings = load_settings({**BASE, "Auth__CookieSecure": "false",
                              "App__Environment": "development"})
    assert settings.cookie_secure is False


def test_the_secure_cookie_is_host_prefixed_and_the_plain_http_one_is_not() -> None:
    assert load_settings(BASE).cookie_name == "__Host-authToken"
    development = {**BASE, "App__Environment": "development"}
    assert load_settings(development).cookie_name == "__Host-authToken"
    # Browsers refuse a __Host- cookie without Secure.
    assert load_settings({**development, "Auth__CookieSecure": "false"}
                         ).cookie_name == "authToken"


def test_all_problems_together() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"Auth__BcryptCost": "20", "Auth__LockoutThreshold": "0",
                       "Auth__HashQueueSize": "many"})
    names = {problem.split(":")[0] for problem in caught.value.problems}
    assert {"JWT__SecretKey", "Internal__SecretKey", "Database__Url", "Auth__BcryptCost",
            "Auth__LockoutThreshold", "Auth__HashQueueSize"} <= names


def test_setup_code_is_read_from_a_file_and_masked(tmp_path) -> None:
    path = tmp_path / "setup_code"
    path.write_text("pale-orbit-lantern-9f3k2q\n")
    settings = load_settings({**BASE, "Auth__SetupCode_FILE": str(path)})
    assert settings.setup_code is not None
    assert settings.setup_code.reveal() == "pale-orbit-lantern-9f3k2q"
    assert "pale-orbit" not in repr(settings)
    assert load_settings(BASE).setup_code is None


def test_a_short_setup_code_is_refused() -> None:
    with pytest.raises(SettingsError, match="Auth__SetupCode"):
        load_settings({**BASE, "Auth__SetupCode": "short-code"})


def test_audit_repeat_window_is_read_in_minutes() -> None:
    assert load_settings(BASE).audit_repeat_window_seconds == 3600
    settings = load_settings({**BASE, "Auth__AuditRepeatWindowMinutes": "5"})
    assert settings.audit_repeat_window_seconds == 300
    with pytest.raises(SettingsError, match="Auth__AuditRepeatWindowMinutes"):
        load_settings({**BASE, "Auth__AuditRepeatWindowMinutes": "0"})
