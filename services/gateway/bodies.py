"""Reading request bodies so that a slow client holds nothing an upstream needs.

A small body (the JSON routes) is read whole, under a total deadline, before an upstream
connection is taken: however slowly it arrives, it never occupies an upstream's pool.
A streamed body (uploads, imports) goes upstream as it arrives, so it is held to an idle
timeout and a minimum rate over a sliding window (``bodyrate``); the caller also caps how
many each client streams at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import aiohttp
from aiohttp import hdrs, web

from services.gateway.bodyrate import MinRate, RateWindow
from services.gateway.slots import ClientSlots

# The 100 Continue that aiohttp would send before any check ran is sent here instead, once
# the request has passed them and its body is about to be read.
EXPECT_CONTINUE = web.RequestKey("expect_continue", bool)
Reader = Callable[[], Awaitable[bytes]]
_CLIENT_FAILURES = (ConnectionError, aiohttp.ClientPayloadError,
                    aiohttp.http.HttpProcessingError, asyncio.IncompleteReadError)


class BodyTooLargeError(Exception):
    pass


class ClientGoneError(Exception):
    pass


class BodyTimeoutError(Exception):
    """A small body did not arrive whole within its deadline."""


@dataclass(frozen=True, slots=True)
class StreamRules:
    idle_timeout_seconds: float
    min_rate: MinRate | None
    # Streamed uploads open at once, per client, across every streamed route.
    uploads: ClientSlots


@dataclass(frozen=True, slots=True)
class BodyPolicy:
    limit: int
    # A small body (no stream rules) must have arrived whole within this many seconds.
    deadline_seconds: float
    stream: StreamRules | None = None


async def expect_handler(request: web.Request) -> None:
    """Defer ``100 Continue`` until the body is actually wanted."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if expect.lower() == "100-continue" and request.version == aiohttp.HttpVersion11:
        request[EXPECT_CONTINUE] = True
        return
    raise web.HTTPExpectationFailed()


async def _send_continue(request: web.Request) -> None:
    if request.get(EXPECT_CONTINUE):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0


async def read_small(request: web.Request, limit: int, deadline: float) -> bytes:
    """The whole body, or BodyTimeoutError once ``deadline`` seconds have passed."""
    try:
        async with asyncio.timeout(deadline):
            await _send_continue(request)
            content = request.content
            length = request.content_length
            if length is not None:
                return await content.readexactly(length)
            parts = []
            size = 0
            while chunk := await content.readany():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLargeError
                parts.append(chunk)
            return b"".join(parts)
    except TimeoutError:
        raise BodyTimeoutError from None
    except _CLIENT_FAILURES:
        raise ClientGoneError from None


class BodyStream:
    """The request body as an async iterator that enforces its limits while it streams."""

    __slots__ = ("_expected", "_limit", "_request", "_rules", "client_gone", "received",
                 "stalled", "too_large", "too_slow")

    def __init__(self, request: web.Request, limit: int, rules: StreamRules) -> None:
        self._request = request
        self._limit = limit
        self._rules = rules
        self._expected = request.content_length
        self.received = 0
        self.too_large = False
        self.client_gone = False
        # The client stopped sending in the middle of its body, or sent it too slowly.
        self.stalled = False
        self.too_slow = False

    async def chunks(self) -> AsyncIterator[bytes]:
        request = self._request
        await _send_continue(request)
        content = request.content
        # A body of declared length goes on in the pieces the socket delivered: readany()
        # would first join whatever is buffered into a new bytes object, one more copy of
        # every byte. A chunked body keeps readany(), which merges the client's chunks,
        # however small, instead of forwarding each one on its own.
        read = content.readany if self._expected is None else partial(_next_piece, content)
        read = self._paced(read) if self._rules.min_rate is not None else \
            self._idle_bounded(read)
        limit = self._limit
        try:
            while chunk := await read():
                self.received += len(chunk)
                if self.received > limit:
                    self.too_large = True
                    raise BodyTooLargeError
                yield chunk
        except _CLIENT_FAILURES:
            self.client_gone = True
            raise ClientGoneError from None
        except TimeoutError:
            self.stalled = True
            raise ClientGoneError from None
        if self._expected is not None and self.received != self._expected:
            self.client_gone = True
            raise ClientGoneError

    def _idle_bounded(self, read: Reader) -> Reader:
        idle = self._rules.idle_timeout_seconds

        async def next_piece() -> bytes:
            async with asyncio.timeout(idle):
                return await read()

        return next_piece

    def _paced(self, read: Reader) -> Reader:
        rules = self._rules
        assert rules.min_rate is not None
        window = RateWindow(rules.min_rate)
        clock = asyncio.get_running_loop().time
        idle = rules.idle_timeout_seconds
        # Seconds spent waiting for the client, in all and since its last piece.
        waited = quiet = 0.0

        async def next_piece() -> bytes:
            nonlocal waited, quiet
            while True:
                started = clock()
                chunk: bytes | None
                try:
                    # Woken at each step end too, so that a trickle is cut on time.
                    async with asyncio.timeout(min(idle - quiet, window.next_check - waited)):
                        chunk = await read()
                except TimeoutError:
                    chunk = None
                spent = clock() - started
                waited += spent
                if chunk is None:
                    quiet += spent
                    if quiet >= idle:
                        raise TimeoutError
                elif not chunk:
                    return chunk  # the whole body is in: nothing left to judge
                else:
                    quiet = 0.0
                if not window.passes(waited, self.received + len(chunk or b"")):
                    self.too_slow = True
                    raise TimeoutError
                if chunk is not None:
                    return chunk

        return next_piece


async def _next_piece(content: aiohttp.StreamReader) -> bytes:
    """One buffered piece of a body without chunked framing; ``b""`` at its end."""
    piece, _ = await content.readchunk()
    return piece
