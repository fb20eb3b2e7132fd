"""The password policy: a configurable minimum length, 72 UTF-8 bytes at most (never cut),
and a zxcvbn score of at least 3 with the username as context; each failure names its rule."""

from __future__ import annotations

import pytest

from services.auth.domain import (
    bcrypt_cost_of,
    check_password,
    dummy_cost,
    fits_bcrypt,
    needs_rehash,
    password_problem,
)
from shared.errors import ValidationError

STRONG = "violet-harbor-tangent-42"


def problem_code(password: str, *, min_length: int = 12, username: str | None = None) -> str:
    problem = password_problem(password, min_length=min_length, username=username)
    return "ok" if problem is None else problem.code


def test_a_strong_password_passes() -> None:
    assert password_problem(STRONG, min_length=12, username="Runner") is None
    check_password(STRONG, min_length=12, username="Runner")


@pytest.mark.parametrize(("length", "code"), [(11, "password_too_short"), (12, "ok")])
def test_minimum_length_is_inclusive(length: int, code: str) -> None:
    password = "kq7!Vz2#pW9$mX4&"[:length]
    assert problem_code(password) == code


def test_minimum_length_counts_characters_not_bytes() -> None:
    # Twelve characters, 24 bytes: long enough.
    assert problem_code("ŵǩŗţŷűįőṕåšđ") != "password_too_short"


def test_minimum_length_is_configurable() -> None:
    password = "Qz8#vLp2Wt"  # ten characters
    assert problem_code(password, min_length=12) == "password_too_short"
    assert problem_code(password, min_length=8) == "ok"


def test_too_short_names_the_configured_minimum() -> None:
    problem = password_problem("abc", min_length=14)
    assert problem is not None
    assert "at least 14" in problem.message


@pytest.mark.parametrize(("password", "code"), [
    ("a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0u1V2w3X4y5Z6a7B8c9D0e1F2g3H4i5J6", "ok"),
    ("a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0u1V2w3X4y5Z6a7B8c9D0e1F2g3H4i5J6k",
     "password_too_long"),
    ("ü" * 36, "password_too_weak"),  # 72 bytes: long enough, just weak
    ("ü" * 37, "password_too_long"),  # 74 bytes, only 37 characters
    ("€" * 25, "password_too_long"),  # 75 bytes
])
def test_at_most_72_utf8_bytes(password: str, code: str) -> None:
    assert problem_code(password) == code


def test_over_long_is_refused_not_truncated() -> None:
    assert not fits_bcrypt("x" * 73)
    assert fits_bcrypt("x" * 72)
    assert fits_bcrypt("ü" * 36)
    assert not fits_bcrypt("ü" * 36 + "x")


@pytest.mark.parametrize("password", [
    "passwordpassword",
    "123456789012",
    "aaaaaaaaaaaaaaaa",
    "qwertyuiopasdf",
    "iloveyou12345",
])
def test_guessable_passwords_are_too_weak(password: str) -> None:
    assert problem_code(password) == "password_too_weak"


def test_the_username_counts_as_guessable() -> None:
    password = "Marathoner-Bolt-1"
    assert problem_code(password, username="Somebody") == "ok"
    assert problem_code(password, username="Marathoner-Bolt") == "password_too_weak"


def test_weak_message_says_why() -> None:
    problem = password_problem("passwordpassword", min_length=12)
    assert problem is not None
    assert problem.message.startswith("Password is too easy to guess.")
    assert problem.field == "password"


def test_the_field_can_be_named() -> None:
    with pytest.raises(ValidationError) as caught:
        check_password("short", min_length=12, field="newPassword")
    assert caught.value.field == "newPassword"


@pytest.mark.parametrize(("stored", "cost"), [
    ("$2b$12$abcdefghijklmnopqrstuuKZ0t2m3kQ8Jx1oFJ9vZbV7FOVNzCxS2", 12),
    ("$2a$10$abcdefghijklmnopqrstuu", 10),
    ("$2y$04$abcdefghijklmnopqrstuu", 4),
    ("not a hash", None),
    ("$argon2id$v=19$m=65536", None),
    ("$2b$xx$abc", None),
])
def test_cost_is_read_from_the_stored_hash(stored: str, cost: int | None) -> None:
    assert bcrypt_cost_of(stored) == cost


def test_rehash_whenever_the_stored_cost_differs_either_way() -> None:
    assert needs_rehash("$2b$10$abcdefghijklmnopqrstuu", 12)
    assert not needs_rehash("$2b$12$abcdefghijklmnopqrstuu", 12)
    assert needs_rehash("$2b$13$abcdefghijklmnopqrstuu", 12)
    assert needs_rehash("garbage", 12)


@pytest.mark.parametrize(("stored", "configured", "expected"), [
    # The owner's hash keeps its cost until the next login: the dummy follows it.
    (["$2b$12$abcdefghijklmnopqrstuu"], 10, 12),
    (["$2b$10$abcdefghijklmnopqrstuu"], 12, 10),
    (["$2b$11$abcdefghijklmnopqrstuu"], 11, 11),
    # Several hashes: the highest.
    (["$2b$10$abcdefghijklmnopqrstuu", "$2b$13$abcdefghijklmnopqrstuu"], 11, 13),
    # No user yet, or nothing readable: the cost the first hash will be made at.
    ([], 12, 12),
    (["garbage"], 11, 11),
])
def test_unknown_names_are_timed_at_the_stored_hash_cost(stored: list[str], configured: int,
                                                         expected: int) -> None:
    assert dummy_cost(stored, configured) == expected
