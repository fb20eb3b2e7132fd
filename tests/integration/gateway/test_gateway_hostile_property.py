"""A property over the whole public API: whatever bounded JSON, form fields, query strings,
path segments and headers a signed-in client sends to any operation of the OpenAPI
document, through the gateway to the real auth and media apps, the answer is never a 5xx,
and every refusal is a problem document.

Hypothesis draws the requests (derandomized: the same cases on every run) and sends them
from a worker thread through the test's own event loop, where the servers run.
"""

from __future__ import annotations

import asyncio
import base64
import json
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.gateway.app import OPENAPI_FILE
from tests.integration.gateway.gateway_helpers import BOUNDARY, Browser, png_bytes

EXAMPLES_PER_OPERATION = 30
METHODS = ("get", "post", "put", "patch", "delete")
# Within the HTTP parser's request-line limit (8190 bytes), which refuses longer lines
# before any handler runs.
MAX_QUERY_BYTES = 7000
# Logging out ends the session the other operations use: it gets a session of its own.
OWN_SESSION_OPERATIONS = {"/api/auth/logout"}

# Text of every kind, and text carrying what broke parsers before: lone surrogates, NUL,
# numbers too long to convert, times outside the UTC calendar.
any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=24)
poison = st.sampled_from(["\ud800", "\udfff", "\ude00\ud83d", "\x00"])
known_bad = st.sampled_from(["", " ", "9" * 5000, "1" * 4301, "-1", "0", "1e999",
                             "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                             "violet-harbor-tangent-42", "Runner"])
hostile_text = st.one_of(
    any_text,
    st.builds(lambda before, bad, after: before + bad + after, any_text, poison, any_text),
    known_bad,
    st.integers(min_value=0, max_value=2**80).map(str),
)
times = st.one_of(
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                     "0001-01-01T00:00:00-14:00", "2026-11-28T00:00:00"]),
    st.builds(lambda moment, minutes: moment.replace(
                  tzinfo=timezone(timedelta(minutes=minutes))).isoformat(),
              st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
              st.integers(-23 * 60, 23 * 60)))


def encode_cursor_like(data: Any) -> str:
    raw = json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]
           ) -> st.SearchStrategy[Any]:
    # A draw that reaches a check past the first one needs the other members well formed.
    return st.sampled_from([good, good, bad]).flatmap(lambda kind: kind)


# Cursors shaped like the ones handed out (media's, each trail's, the merged trail's), with
# hostile members, so that the decoders' range checks are reached, not only their base64.
media_cursor = st.builds(lambda when, which: encode_cursor_like({"c": when, "i": which}),
                         times, mostly(st.uuids().map(str), hostile_text))
position = st.builds(lambda when, which: encode_cursor_like({"t": when, "i": which}),
                     times, mostly(st.integers(0, 2**64).map(str), hostile_text))
merged_cursor = st.builds(
    lambda auth, media: encode_cursor_like({"auth": auth, "media": media}),
    st.one_of(position, st.none(), st.just("")), st.one_of(position, st.none()))
loose_cursor = st.builds(
    encode_cursor_like,
    st.dictionaries(st.sampled_from(["c", "t", "i", "auth", "media"]),
                    st.one_of(st.none(), hostile_text, st.integers()), max_size=3))
numbers = st.one_of(st.integers(4_000, 5_000).map(lambda digits: "9" * digits),
                    st.integers(-10, 10**6).map(str),
                    st.text(alphabet=string.digits, min_size=1, max_size=40), hostile_text)
# Each documented parameter gets values of its own kind first, then anything.
CURSORS = {"/api/media": media_cursor, "/api/audit": merged_cursor}


def query_value(operation: Operation, name: str) -> st.SearchStrategy[str]:
    if name == "limit":
        return numbers
    if name == "cursor":
        return mostly(CURSORS.get(operation.path, loose_cursor),
                      st.one_of(loose_cursor, hostile_text))
    return st.one_of(hostile_text, numbers, loose_cursor)


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                         st.integers(min_value=10**40, max_value=10**60), hostile_text)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(hostile_text, children, max_size=4)),
    max_leaves=12)


def nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


deep_documents = st.builds(nested, st.one_of(st.integers(30, 40), st.integers(1_000, 11_000)),
                           st.sampled_from(["array", "object"]))


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    query: tuple[str, ...]
    headers: tuple[str, ...]
    body: str | None  # the one content type its request body has
    fields: tuple[str, ...] = field(default=())


def operations() -> list[Operation]:
    document = json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))
    found = []
    for path, item in document["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            spec = item[method]
            parameters = [*item.get("parameters", []), *spec.get("parameters", [])]
            content = spec.get("requestBody", {}).get("content", {})
            body = next(iter(content), None)
            schema = content.get(body, {}).get("schema", {}) if body else {}
            if "$ref" in schema:
                name = schema["$ref"].rsplit("/", 1)[-1]
                schema = document["components"]["schemas"][name]
            found.append(Operation(
                method.upper(), path,
                query=tuple(p["name"] for p in parameters if p["in"] == "query"),
                headers=tuple(p["name"] for p in parameters if p["in"] == "header"),
                body=body, fields=tuple(schema.get("properties", {}))))
    return found


@dataclass(frozen=True)
class Sent:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None


def json_bodies(operation: Operation) -> st.SearchStrategy[tuple[str, bytes]]:
    value = st.one_of(hostile_text, json_values)
    complete = st.fixed_dictionaries({name: hostile_text for name in operation.fields})
    partial = st.fixed_dictionaries({}, optional={name: value for name in operation.fields})
    documents = st.one_of(
        complete.map(lambda data: json.dumps(data).encode()),
        partial.map(lambda data: json.dumps(data).encode()),
        json_values.map(lambda value: json.dumps(value).encode()),
        deep_documents,
        st.binary(max_size=64))
    content_type = st.sampled_from(["application/json"] * 4 + ["text/plain",
                                                                "application/json; charset=x"])
    return st.tuples(content_type, documents)


def form_part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return (f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + value + b"\r\n"


def form_bodies(operation: Operation) -> st.SearchStrategy[tuple[str, bytes]]:
    field_value = hostile_text.map(lambda text: text.encode("utf-8", "surrogatepass"))
    text_parts = st.lists(st.tuples(st.sampled_from([*operation.fields, "x"]), field_value),
                          max_size=3)
    files = st.one_of(st.just(png_bytes()), st.binary(max_size=256))
    names = st.one_of(st.just("dot.png"),
                      st.text(alphabet=string.ascii_letters + string.digits + " ._-()[]'%\\",
                              max_size=20))

    def build(parts: list[tuple[str, bytes]], data: bytes, filename: str, closed: bool
              ) -> bytes:
        body = b"".join(form_part(name, value) for name, value in parts)
        body += form_part("file", data, filename)
        return body + (f"--{BOUNDARY}--\r\n".encode() if closed else b"")

    forms = st.builds(build, text_parts, files, names, st.booleans())
    return st.one_of(st.tuples(st.just(f"multipart/form-data; boundary={BOUNDARY}"), forms),
                     json_bodies(operation))


def escaped(text: str) -> str:
    return quote(text, safe="", errors="surrogatepass")


header_values = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + " -=,*\"/", max_size=40),
    st.builds(lambda a, b: f"bytes={a}-{b}", st.text(alphabet=string.digits, max_size=30),
              st.text(alphabet=string.digits, max_size=30)))


def requests_for(operation: Operation, known_ids: tuple[str, ...]) -> st.SearchStrategy[Sent]:
    # A deletion never gets the one stored item: the operations after it need it.
    known = () if operation.method == "DELETE" else known_ids
    identifiers = st.one_of(st.sampled_from([*known, str(uuid.uuid4())]), st.uuids().map(str),
                            hostile_text.filter(bool))

    @st.composite
    def build(draw: Callable[..., Any]) -> Sent:
        path = operation.path
        if "{id}" in path:
            path = path.replace("{id}", escaped(draw(identifiers)))
        names = [*operation.query, *draw(st.lists(hostile_text.filter(bool), max_size=1))]
        pairs = [(name, draw(query_value(operation, name))) for name in names
                 if draw(st.booleans())]
        query = "&".join(f"{escaped(name)}={escaped(value)}" for name, value in pairs)
        if len(query) > MAX_QUERY_BYTES:
            query = query[:MAX_QUERY_BYTES].rsplit("&", 1)[0] if "&" in query else ""
        if query:
            path += "?" + query
        headers = {name: draw(header_values) for name in operation.headers
                   if draw(st.booleans())}
        body = None
        if operation.body is not None:
            strategy = (form_bodies(operation) if operation.body.startswith("multipart/")
                        else json_bodies(operation))
            content_type, body = draw(strategy)
            headers["Content-Type"] = content_type
        return Sent(operation.method, path, headers, body)

    return build()


Send = Callable[[Operation, Sent], tuple[int, str | None]]


def property_for(operation: Operation, known_ids: tuple[str, ...], send: Send,
                 statuses: set[int]) -> Callable[[], None]:
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
              database=None, print_blob=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example])
    @given(sent=requests_for(operation, known_ids))
    def property_holds(sent: Sent) -> None:
        status, code = send(operation, sent)
        statuses.add(status)
        assert status < 500, (sent.method, sent.path[:300], sent.headers,
                              (sent.body or b"")[:300], status)
        if status >= 400:
            assert code is not None, ("not a problem document", sent.path[:300], status)

    return property_holds


def check_every_operation(known_ids: tuple[str, ...], send: Send,
                          seen: dict[str, set[int]]) -> None:
    for operation in operations():
        statuses = seen.setdefault(f"{operation.method} {operation.path}", set())
        property_for(operation, known_ids, send, statuses)()


async def test_no_request_to_any_operation_is_answered_with_a_5xx(real_stack: Browser
                                                                  ) -> None:
    loop = asyncio.get_running_loop()
    # Logging out must not end the session everything else runs in.
    spare = Browser(real_stack.session, real_stack.base)
    stored = await real_stack.request(
        "POST", "/api/media", data=form_part("file", png_bytes(), "dot.png")
        + f"--{BOUNDARY}--\r\n".encode(),
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert stored.status == 201, await stored.text()
    known_ids = ((await stored.json())["items"][0]["id"],)
    codes: set[str] = set()

    async def exchange(operation: Operation, sent: Sent) -> tuple[int, str | None]:
        browser = real_stack
        if operation.path in OWN_SESSION_OPERATIONS:
            await spare.login()
            browser = spare
        response = await browser.request(sent.method, sent.path, headers=sent.headers,
                                         data=sent.body)
        if response.content_type != "application/problem+json":
            return response.status, None
        code = (await response.json())["code"]
        codes.add(code)
        return response.status, code

    def send(operation: Operation, sent: Sent) -> tuple[int, str | None]:
        return asyncio.run_coroutine_threadsafe(exchange(operation, sent), loop).result(60)

    seen: dict[str, set[int]] = {}
    await asyncio.to_thread(check_every_operation, known_ids, send, seen)

    assert set(seen) == {f"{o.method} {o.path}" for o in operations()}
    assert all(seen.values())
    # The cases reached the services' own parsers, each kind of hostile input among them...
    assert {"json_too_deep", "invalid_text", "malformed_json", "invalid_limit",
            "invalid_cursor"} <= codes, codes
    # ...and the session they ran in survived them.
    assert (await real_stack.request("GET", "/api/auth/me")).status == 200
