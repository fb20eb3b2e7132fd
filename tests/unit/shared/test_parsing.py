"""The strict JSON reader and the whole-number parser every service's input goes through."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import parsing
from shared.parsing import JsonRefusedError, loads, nesting_exceeds, whole_number


@pytest.mark.parametrize("document", [
    '{"a": 1}', "[]", '"text"', "null", '{"a": [[{"b": "c"}]]}', '{"emoji": "\\ud83d\\ude00"}',
    '{"tab": "\\t", "brackets": "[[[[{{{{"}', '"\\\\[[["', '{"x": -12345678901234567890}',
])
def test_ordinary_documents_parse_as_json_does(document: str) -> None:
    assert loads(document) == json.loads(document)
    assert loads(document.encode()) == json.loads(document)


def refusal(document: str | bytes) -> str:
    with pytest.raises(JsonRefusedError) as refused:
        loads(document)
    return refused.value.code


def test_json_nesting_at_the_bound_parses_and_one_deeper_is_refused() -> None:
    depth = parsing.MAX_JSON_DEPTH
    assert loads("[" * depth + "]" * depth) is not None
    assert refusal("[" * (depth + 1) + "]" * (depth + 1)) == "json_too_deep"
    assert refusal('{"a":' * (depth + 1) + "1" + "}" * (depth + 1)) == "json_too_deep"


def test_brackets_inside_strings_do_not_count_towards_depth() -> None:
    text = json.dumps({"a": "[" * 5000, "b": "\\\"[[[" * 100, "c": '"{"' * 50})
    assert loads(text) == json.loads(text)


def test_deep_nesting_is_refused_without_recursion_in_linear_time() -> None:
    # 30,000 levels in 60 KB: json.loads alone raises RecursionError on this.
    document = "[" * 30_000 + "]" * 30_000
    started = time.process_time()
    assert refusal(document) == "json_too_deep"
    assert refusal(document.encode()) == "json_too_deep"
    assert refusal('{"a":' * 12_000 + "1" + "}" * 12_000) == "json_too_deep"
    # Unclosed and mismatched brackets, strings that never end: refused, never recursed.
    assert refusal("[" * 60_000) == "json_too_deep"
    assert refusal('"' + "\\\"[" * 20_000) == "malformed_json"
    assert time.process_time() - started < 2  # a quadratic scan of 60 KB takes minutes


@pytest.mark.parametrize("document", [
    '{"password": "\\ud800abc"}', '{"\\udfff": 1}', '["ok", ["\\ud83d"]]', '"\\ude00\\ud83d"',
    '{"caption": "a\\u0000b"}', '{"a\\u0000": "b"}', '[{"x": ["\\u0000"]}]',
])
def test_lone_surrogates_and_nul_are_refused_in_keys_and_values(document: str) -> None:
    assert refusal(document) == "invalid_text"


@pytest.mark.parametrize("document", [
    b"", b"{", b"\xff\xfe{}", b'{"a": "\xed\xa0\x80"}', b"\xef\xbb\xbf{}", b"NaN", b"[Infinity]",
    b'{"a": "raw\x00nul"}', ("[" + "9" * 5000 + "]").encode(), ("[" + "9" * 33 + "]").encode(),
])
def test_malformed_documents_are_refused_as_malformed(document: bytes) -> None:
    assert refusal(document) == "malformed_json"


def test_nesting_scan_matches_the_parser_on_valid_documents() -> None:
    assert not nesting_exceeds('{"a": [1, {"b": []}]}', 4)
    assert nesting_exceeds('{"a": [1, {"b": [[]]}]}', 4)
    assert not nesting_exceeds('["\\\\", ["\\"]]"]]', 2)


@pytest.mark.parametrize(("value", "expected"), [
    ("1", 1), ("100", 100), ("007", 7), ("9223372036854775807", 2**63 - 1),
])
def test_whole_number_in_range(value: str, expected: int) -> None:
    assert whole_number(value, minimum=0, maximum=max(expected, 100)) == expected


@pytest.mark.parametrize("value", ["", "0", "101", "-1", "+1", "1.5", " 5", "5 ", "ten", "٣",
                                   "²", "1_0", "0100", "1" * 5000, "9" * 100_000])
def test_whole_number_refuses_everything_else_without_converting_long_strings(value: str
                                                                              ) -> None:
    assert whole_number(value, minimum=1, maximum=100) is None


def test_nul_is_allowed_only_in_the_named_members_and_surrogates_nowhere() -> None:
    document = '{"password": "a\\u0000b", "username": "x"}'
    assert loads(document, nul_allowed=("password",))["password"] == "a\x00b"
    with pytest.raises(JsonRefusedError) as refused:
        loads(document)
    assert (refused.value.code, refused.value.field) == ("invalid_text", "password")
    for text in ('{"password": "\\ud800"}', '{"password": ["\\ud800"]}',
                 '{"pass\\u0000word": "x"}'):
        with pytest.raises(JsonRefusedError):
            loads(text, nul_allowed=("password",))


def test_in_utc_refuses_naive_times_and_times_outside_the_utc_calendar() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    east = timezone(timedelta(hours=14))
    assert parsing.in_utc(datetime(2026, 1, 1, 14, tzinfo=east)) == datetime(2026, 1, 1,
                                                                             tzinfo=UTC)
    for moment in (datetime(2026, 1, 1), datetime(1, 1, 1, tzinfo=east),
                   datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-14)))):
        with pytest.raises(ValueError, match="time"):
            parsing.in_utc(moment)


def depth_of(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    return 0


json_texts = st.text(alphabet=st.characters(exclude_categories=()), max_size=8)
json_documents = st.recursive(
    st.none() | st.booleans() | st.integers() | json_texts,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(json_texts, children,
                                                                       max_size=3),
    max_leaves=40)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(json_documents, st.integers(0, 6))
def test_nesting_scan_agrees_with_the_documents_depth(document: object, limit: int) -> None:
    text = json.dumps(document, ensure_ascii=bool(limit % 2))
    assert nesting_exceeds(text, limit) == (depth_of(document) > limit)


@settings(max_examples=500, derandomize=True, database=None, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                 json_documents.map(lambda document: json.dumps(document).encode())))
def test_loads_either_parses_or_refuses_never_anything_else(raw: bytes) -> None:
    code = None
    try:
        loads(raw)
    except JsonRefusedError as refused:
        code = refused.code
    assert code in {None, "malformed_json", "json_too_deep", "invalid_text"}
