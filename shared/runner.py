"""Serving an application, and answering requests its HTTP parser refused.

A request aiohttp's parser refuses (a malformed header line, a control character in a
value, a line over the limit) never reaches the application: no middleware and no
``on_response_prepare`` signal runs for it. aiohttp answers it from
``RequestHandler.handle_error`` with a text body that quotes the offending line, which may
be the whole ``Cookie`` header, and its version banner. ``ProblemRunner`` answers it like
every other error instead: a generic problem+json document that echoes nothing, headers
from the application's ``PARSER_ERROR_HEADERS`` hook (the gateway's security headers),
and a log line that names the error's type but not its text (which holds the bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import ssl
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import hdrs, web

from shared.keys import PARSER_ERROR_HEADERS, REQUEST_ID
from shared.web import PROBLEM_JSON, generic_message, new_request_id, problem_document

log = structlog.get_logger("http")

# The parser's limits, stated here rather than left to aiohttp's defaults: nginx's
# ``large_client_header_buffers`` must stay within them so that nginx refuses first
# (tests/deploy/test_nginx_config.py compares the two).
MAX_LINE_BYTES = 8190       # request line
MAX_FIELD_BYTES = 8190      # a header line: its name and value together
MAX_HEADERS = 128
KEEPALIVE_SECONDS = 75.0


class _RefusedResponse(web.Response):
    """The answer to a refused request; the application's hook sets its headers last."""

    def __init__(self, status: int, request: web.BaseRequest, decorate: Any) -> None:
        request_id = new_request_id()
        request[REQUEST_ID] = request_id
        code, message = generic_message(status)
        super().__init__(status=status, content_type=PROBLEM_JSON, text=json.dumps(
            problem_document(status, code, message, request_id=request_id)))
        self.request_id = request_id
        self._decorate = decorate
        self.force_close()

    async def _prepare_headers(self) -> None:
        # aiohttp adds its version banner (``Server``) while it prepares the headers, after
        # anything a handler sets, and for a refused request no ``on_response_prepare``
        # signal follows. Hooking in here is this module's second reliance on aiohttp's
        # internals; the same tests cover it.
        await super()._prepare_headers()
        self.headers.popall(hdrs.SERVER, None)
        if self._decorate is not None and self._req is not None:
            self._decorate(self._req, self)


class ParserErrorHandler(web.RequestHandler):
    """aiohttp's protocol, with ``handle_error`` answering problem+json."""

    __slots__ = ("_decorate",)

    def __init__(self, manager: web.Server, *, decorate: Any, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._decorate = decorate

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # As aiohttp does: once bytes of a response are out, no other answer can follow.
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already being sent")
        response = _RefusedResponse(status, request, self._decorate)
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            log.error("unhandled_error", status=status, request_id=response.request_id,
                      exc_info=exc)
        else:
            log.info("request_refused", status=status, request_id=response.request_id,
                     reason=type(exc).__name__ if exc else None)
        return response


class _ProblemServer(web.Server):
    """The protocol factory: builds ``ParserErrorHandler`` instead of ``RequestHandler``."""

    def __init__(self, app_server: web.Server, decorate: Any, **handler_kwargs: Any) -> None:
        super().__init__(app_server.request_handler,
                         request_factory=app_server.request_factory,
                         handler_cancellation=app_server.handler_cancellation,
                         **handler_kwargs)
        self._decorate = decorate
        self._handler_kwargs = handler_kwargs
        self._handler_loop = asyncio.get_running_loop()

    def __call__(self) -> web.RequestHandler:
        return ParserErrorHandler(self, loop=self._handler_loop, decorate=self._decorate,
                                  **self._handler_kwargs)


class ProblemRunner(web.AppRunner):
    """An ``AppRunner`` whose connections answer parser errors with ``ParserErrorHandler``.

    The first reliance on aiohttp's internals is here: ``AppRunner._make_server`` starts the
    application and builds its ``web.Server``, whose handler and request factory are then
    served by a ``web.Server`` subclass whose protocol factory (``__call__``, public)
    builds the handler above (``RequestHandler`` and its ``handle_error`` are public).
    tests/integration/gateway/test_gateway_parser_errors.py sends refused requests through
    this runner, so an aiohttp release that changes any of it fails there.
    """

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, access_log=None, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _ProblemServer(server, self.app.get(PARSER_ERROR_HEADERS),
                              access_log=None, keepalive_timeout=KEEPALIVE_SECONDS,
                              max_line_size=MAX_LINE_BYTES, max_field_size=MAX_FIELD_BYTES,
                              max_headers=MAX_HEADERS)


@contextlib.asynccontextmanager
async def listening(app: web.Application, *, host: str, port: int,
                    ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """Serve ``app`` while the block runs; yields the bound port (``port=0`` picks one)."""
    runner = ProblemRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def serve_until_signalled(app: web.Application, *, host: str, port: int,
                                ssl_context: ssl.SSLContext | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with listening(app, host=host, port=port, ssl_context=ssl_context):
        await stop.wait()
