"""Settings validation: every bad value is reported by name, never by value."""

from __future__ import annotations

import pytest

from shared.config import (
    TEMPO_PLACEHOLDER_SECRET,
    Env,
    Secret,
    SettingsError,
    load_common,
    load_jwt,
    signing_secret_problems,
)

GOOD_JWT = "k3Jx9Qw7Lm2Zp5Rt8Yv1Bn4Hc6Df0Ga-_Es"
GOOD_INTERNAL = "Zq8Wx2Ce4Rv6Tb8Yn0Um1Ik3Ol5Pa7Sd9Fg"
GOOD_DB = "postgresql://tempo:Xr7pLm2Qw9Zt5Vb3@db:5432/tempo"


def good_env(**overrides: str | None) -> dict[str, str]:
    env = {"JWT__SecretKey": GOOD_JWT, "Internal__SecretKey": GOOD_INTERNAL,
           "Database__Url": GOOD_DB}
    env.update({k: v for k, v in overrides.items() if v is not None})
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
    return env


def problems_of(environ: dict[str, str], service: str = "gateway") -> list[str]:
    """What a service that holds the users' token keys finds wrong."""
    env = Env(environ)
    load_jwt(env, load_common(env, service, 8080))
    return env.problems


def test_good_environment_has_no_problems_and_defaults_to_production() -> None:
    env = Env(good_env())
    settings = load_common(env, "auth", 8081)
    jwt = load_jwt(env, settings)
    assert env.problems == []
    assert settings.environment == "production"
    assert not settings.development
    assert jwt.issuer == "Tempo"
    assert jwt.audience == "Tempo"
    assert jwt.expiration_days == 7
    assert settings.port == 8081
    assert settings.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "is required"),
        (TEMPO_PLACEHOLDER_SECRET, "placeholder"),
        ("short-but-random-Q1", "at least 32"),
        ("a" * 64, "trivially weak"),
        ("abababababababababababababababababab", "trivially weak"),
    ],
)
def test_bad_jwt_secret_is_refused_by_name(value: str | None, expected: str) -> None:
    problems = problems_of(good_env(JWT__SecretKey=value))
    assert len(problems) == 1
    assert problems[0].startswith("JWT__SecretKey:")
    assert expected in problems[0]
    if value:
        assert value not in problems[0]


def test_internal_secret_must_differ_from_jwt_secret() -> None:
    problems = problems_of(good_env(Internal__SecretKey=GOOD_JWT))
    assert problems == ["Internal__SecretKey: must differ from every JWT key"]


@pytest.mark.parametrize("password", ["", "postgres", "password", "Short-Pass-1"])
def test_weak_database_password_refused_in_production(password: str) -> None:
    url = f"postgresql://tempo:{password}@db/tempo" if password else "postgresql://tempo@db/tempo"
    problems = problems_of(good_env(Database__Url=url))
    assert len(problems) == 1
    assert problems[0].startswith("Database__Url: the database password must")
    assert url not in problems[0]


def test_weak_database_password_allowed_in_development() -> None:
    env = good_env(Database__Url="postgresql://postgres@127.0.0.1/tempo",
                   App__Environment="development")
    assert problems_of(env) == []


def test_every_problem_is_collected_at_once() -> None:
    problems = problems_of({"App__Environment": "staging", "Server__Port": "http",
                            "JWT__ExpirationDays": "0"})
    names = {problem.split(":")[0] for problem in problems}
    assert {"App__Environment", "Server__Port", "JWT__ExpirationDays", "JWT__SecretKey",
            "Internal__SecretKey", "Database__Url"} <= names


def test_secret_from_file_strips_the_trailing_newline(tmp_path) -> None:
    path = tmp_path / "jwt"
    path.write_text(GOOD_JWT + "\n")
    env = Env({"JWT__SecretKey_FILE": str(path)})
    secret = env.secret("JWT__SecretKey")
    assert secret is not None
    assert secret.reveal() == GOOD_JWT
    assert env.problems == []


def test_secret_file_that_cannot_be_read_is_a_problem(tmp_path) -> None:
    env = Env({"JWT__SecretKey_FILE": str(tmp_path / "missing")})
    assert env.secret("JWT__SecretKey") is None
    assert env.problems == ["JWT__SecretKey_FILE: names a file that cannot be read"]


def test_secret_given_twice_is_a_problem(tmp_path) -> None:
    path = tmp_path / "jwt"
    path.write_text(GOOD_JWT)
    env = Env({"JWT__SecretKey": GOOD_JWT, "JWT__SecretKey_FILE": str(path)})
    env.secret("JWT__SecretKey")
    assert len(env.problems) == 1


def test_database_password_file_replaces_the_url_password(tmp_path) -> None:
    path = tmp_path / "dbpass"
    path.write_text("N3w-Str0ng/Pass@word!")
    env = Env(good_env(Database__Url="postgresql://tempo@db:5432/tempo",
                       Database__Password_FILE=str(path)))
    settings = load_common(env, "media", 8082)
    assert env.problems == []
    assert settings.database_url.reveal() == (
        "postgresql://tempo:N3w-Str0ng%2FPass%40word%21@db:5432/tempo")


def test_previous_keys_are_held_to_the_same_rules() -> None:
    problems = problems_of(good_env(JWT__PreviousSecretKeys=f"{GOOD_JWT[::-1]},tooshort"))
    assert problems == ["JWT__PreviousSecretKeys[1]: must be at least 32 characters"]


def test_secret_never_shows_its_value() -> None:
    secret = Secret(GOOD_JWT)
    assert GOOD_JWT not in repr(secret)
    assert GOOD_JWT not in str(secret)
    assert GOOD_JWT not in f"{secret}"
    assert GOOD_JWT not in repr({"key": secret})
    assert secret == Secret(GOOD_JWT)
    assert secret != Secret(GOOD_INTERNAL)


def test_settings_error_carries_every_problem() -> None:
    error = SettingsError(["A: x", "B: y"])
    assert error.problems == ["A: x", "B: y"]


def test_signing_secret_of_good_random_key_passes() -> None:
    assert signing_secret_problems("K", Secret(GOOD_JWT)) == []
