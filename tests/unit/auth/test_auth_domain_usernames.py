"""Username normalisation: trimmed, NFKC, 1-50 characters, no control characters, and one
comparison key for every way of writing the same name."""

from __future__ import annotations

import pytest

from services.auth.domain import normalize_username, username_key
from shared.errors import ValidationError


@pytest.mark.parametrize(("raw", "display"), [
    ("Runner", "Runner"),
    ("  Runner\t", "Runner"),
    ("Ｒｕｎｎｅｒ", "Runner"),  # full-width letters fold to ASCII under NFKC
    ("ﬁnn", "finn"),  # the ligature becomes two letters
    ("Zoë", "Zoë"),
    ("Zoe\u0308", "Zoë"),  # combining diaeresis composes
    ("jane doe", "jane doe"),
    ("x" * 50, "x" * 50),
])
def test_usernames_are_trimmed_and_nfkc_normalised(raw: str, display: str) -> None:
    assert normalize_username(raw).display == display


@pytest.mark.parametrize("variants", [
    ["Runner", "runner", "RUNNER", "Ｒunner", " rUnNeR "],
    ["Straße", "STRASSE", "strasse"],
    ["Zoë", "ZOË", "zoe\u0308"],
])
def test_one_key_for_every_spelling_of_a_name(variants: list[str]) -> None:
    keys = {normalize_username(variant).key for variant in variants}
    assert len(keys) == 1


def test_different_names_have_different_keys() -> None:
    assert normalize_username("runner1").key != normalize_username("runner2").key


def test_key_is_stable_under_normalisation() -> None:
    key = normalize_username("Ｒunner").key
    assert username_key(key) == key


@pytest.mark.parametrize(("raw", "words"), [
    ("", "empty"),
    ("   ", "empty"),
    ("\u3000", "empty"),  # ideographic space becomes a plain space, then is trimmed
    ("x" * 51, "at most 50"),
    ("Ｘ" * 51, "at most 50"),
    ("run\x00ner", "control"),
    ("run\x1bner", "control"),
    ("run\x7fner", "control"),
    ("run\nner", "control"),
    ("run\u200bner", "control"),  # zero-width space
    ("run\u202ener", "control"),  # right-to-left override
    ("run\ufeffner", "control"),  # byte-order mark
])
def test_bad_usernames_are_refused_with_the_rule(raw: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        normalize_username(raw)
    assert caught.value.field == "username"
    assert caught.value.code == "invalid_username"
    assert words in caught.value.message
