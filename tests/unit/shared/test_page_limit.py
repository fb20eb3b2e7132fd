"""The ``limit`` query parameter every paged list shares."""

from __future__ import annotations

import pytest

from shared.errors import ValidationError
from shared.web import page_limit


@pytest.mark.parametrize(("value", "expected"), [(None, 50), ("", 50), ("1", 1), ("100", 100),
                                                 ("007", 7)])
def test_absent_or_in_range(value: str | None, expected: int) -> None:
    assert page_limit(value, default=50, maximum=100) == expected


@pytest.mark.parametrize("value", ["0", "101", "-1", "1.5", " 5", "ten", "٣", "1" * 5000,
                                   "0100"])
def test_anything_else_is_a_validation_error_naming_the_range(value: str) -> None:
    with pytest.raises(ValidationError, match="from 1 to 100") as raised:
        page_limit(value, default=50, maximum=100)
    assert raised.value.code == "invalid_limit"
