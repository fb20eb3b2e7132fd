"""Streaming requests to an upstream and its answer back, one pooled session per upstream.

Neither body is ever held whole: request chunks go to the upstream as they arrive and are
counted on the way; response chunks go to the client as they arrive. When a request body
goes over its limit, or the client disappears, the body stream raises, which aborts the
upstream request mid-body so that the upstream sees a broken upload, never a complete one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from functools import partial
from urllib.parse import quote

import aiohttp
import structlog
from aiohttp import hdrs, web
from yarl import URL

from services.gateway import metrics
from services.gateway.headers import downstream_response_headers, upstream_request_headers
from services.gateway.routes import ApiRoute
from services.gateway.settings import UpstreamSettings
from shared.config import KeySet
from shared.errors import BadGatewayError, GatewayTimeoutError
from shared.identity import INTERNAL_TOKEN_HEADER, internal_codec, mint_internal_token
from shared.keys import REQUEST_ID
from shared.web import REQUEST_ID_HEADER, problem_response

log = structlog.get_logger("proxy")

READ_CHUNK = 256 * 1024
SMALL_BODY = 64 * 1024
# Internal tokens live 60 s; one is reused for at most half of that.
IDENTITY_REUSE_SECONDS = 30.0
HEALTH_TIMEOUT = aiohttp.ClientTimeout(total=2.0)
_IDENTITY_CACHE_LIMIT = 10_000
# The 100 Continue that aiohttp would send before any check ran is sent here instead, once
# the request has passed them and its body is about to be read.
EXPECT_CONTINUE = web.RequestKey("expect_continue", bool)


class BodyTooLargeError(Exception):
    pass


class ClientGoneError(Exception):
    pass


class BodyStream:
    """The request body as an async iterator that enforces a limit while it streams."""

    __slots__ = ("_expected", "_idle_timeout", "_limit", "_request", "client_gone", "received",
                 "stalled", "too_large")

    def __init__(self, request: web.Request, limit: int, idle_timeout: float) -> None:
        self._request = request
        self._limit = limit
        self._idle_timeout = idle_timeout
        self._expected = request.content_length
        self.received = 0
        self.too_large = False
        self.client_gone = False
        # The client stopped sending in the middle of its body (a slow or stuck upload).
        self.stalled = False

    async def chunks(self) -> AsyncIterator[bytes]:
        request = self._request
        if request.get(EXPECT_CONTINUE):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        content = request.content
        # A body of declared length goes on in the pieces the socket delivered: readany()
        # would first join whatever is buffered into a new bytes object, one more copy of
        # every byte. A chunked body keeps readany(), which merges the client's chunks,
        # however small, instead of forwarding each one on its own.
        read = content.readany if self._expected is None else partial(_next_piece, content)
        limit = self._limit
        idle = self._idle_timeout
        try:
            while True:
                async with asyncio.timeout(idle):
                    chunk = await read()
                if not chunk:
                    break
                self.received += len(chunk)
                if self.received > limit:
                    self.too_large = True
                    raise BodyTooLargeError
                yield chunk
        except (ConnectionError, aiohttp.ClientPayloadError, aiohttp.http.HttpProcessingError):
            self.client_gone = True
            raise ClientGoneError from None
        except TimeoutError:
            self.stalled = True
            raise ClientGoneError from None
        if self._expected is not None and self.received != self._expected:
            self.client_gone = True
            raise ClientGoneError


async def _next_piece(content: aiohttp.StreamReader) -> bytes:
    """One buffered piece of a body without chunked framing; ``b""`` at its end."""
    piece, _ = await content.readchunk()
    return piece


async def expect_handler(request: web.Request) -> None:
    """Defer ``100 Continue`` until the body is actually wanted (see ``BodyStream``)."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if expect.lower() == "100-continue" and request.version == aiohttp.HttpVersion11:
        request[EXPECT_CONTINUE] = True
        return
    raise web.HTTPExpectationFailed()


class IdentityMinter:
    """Mints internal tokens, reusing one per caller for part of its lifetime."""

    def __init__(self, keys: KeySet, audience: str) -> None:
        self._codec = internal_codec(keys, audience)
        self._audience = audience
        self._cache: dict[tuple[str | None, str | None, str, str | None], tuple[str, float]] = {}

    def token(self, user_id: str | None, session_id: str | None, client_ip: str,
              user_agent: str | None) -> str:
        # The token keeps 512 characters of the user agent; so does the key, which bounds
        # what a client can make this cache hold.
        user_agent = user_agent[:512] if user_agent else None
        key = (user_id, session_id, client_ip, user_agent)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[1] < IDENTITY_REUSE_SECONDS:
            return cached[0]
        token = mint_internal_token(self._codec, audience=self._audience, user_id=user_id,
                                    session_id=session_id, client_ip=client_ip,
                                    user_agent=user_agent)
        if len(self._cache) >= _IDENTITY_CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = (token, now)
        return token


class Upstream:
    def __init__(self, name: str, base_url: str, settings: UpstreamSettings,
                 keys: KeySet) -> None:
        self.name = name
        self.base_url = base_url
        self.identity = IdentityMinter(keys, name)
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        # Parsed once per route path: yarl also keeps what it derives from a URL (host,
        # port, the Host header value) on the object.
        self._urls: dict[str, URL] = {}

    def url(self, path: str) -> URL:
        """The URL of a fixed upstream path (the route table bounds how many there are)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(f"{self.base_url}{path}", encoded=True)
        return url

    async def start(self) -> None:
        settings = self._settings
        connector = aiohttp.TCPConnector(limit=settings.pool_size, keepalive_timeout=30,
                                         enable_cleanup_closed=False)
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Never remember cookies: one user's Set-Cookie must not ride on the next
            # user's request.
            cookie_jar=aiohttp.DummyCookieJar(),
            # Bytes pass through untouched, compressed or not.
            auto_decompress=False,
            # The upstream sees only what the client sent: answers pass through untouched,
            # so an Accept-Encoding the browser never sent could bring it compressed bytes
            # it did not ask for.
            skip_auto_headers=(hdrs.ACCEPT, hdrs.USER_AGENT, hdrs.ACCEPT_ENCODING,
                               hdrs.CONTENT_TYPE),
            timeout=aiohttp.ClientTimeout(total=None,
                                          connect=settings.connect_timeout_seconds,
                                          sock_read=settings.read_timeout_seconds),
            raise_for_status=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "upstream used before the application started"
        return self._session

    async def healthy(self) -> bool:
        try:
            async with self.session.get(f"{self.base_url}/health",
                                        timeout=HEALTH_TIMEOUT) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False


def _upstream_url(upstream: Upstream, route: ApiRoute, request: web.Request) -> URL:
    path = route.upstream_path
    # The query exactly as the client encoded it: decoding and re-encoding could change it.
    query = request.rel_url.raw_query_string
    if "{" in path:
        path = path.format_map({name: quote(value, safe="")
                                for name, value in request.match_info.items()})
    elif not query:
        return upstream.url(path)
    url = f"{upstream.base_url}{path}?{query}" if query else f"{upstream.base_url}{path}"
    # Already encoded: parsing it again could re-encode or decode parts of it.
    return URL(url, encoded=True)


def too_large_response(request: web.Request, limit: int) -> web.Response:
    response = problem_response(413, "payload_too_large",
                                f"The request body must be at most {limit} bytes.",
                                request_id=request.get(REQUEST_ID))
    # The connection is not reused: the rest of the body is only drained for the server's
    # bounded lingering time, so that the client can read this answer, then it closes.
    response.force_close()
    return response


async def forward(request: web.Request, route: ApiRoute, upstream: Upstream, limit: int,
                  identity_token: str, body_idle_timeout: float) -> web.StreamResponse:
    """Send the request upstream and stream the answer back."""
    length = request.content_length
    if length is not None and length > limit:
        metrics.BODY_TOO_LARGE.labels("declared").inc()
        return too_large_response(request, limit)

    headers = upstream_request_headers(request.headers)
    headers[INTERNAL_TOKEN_HEADER] = identity_token
    headers[REQUEST_ID_HEADER] = request[REQUEST_ID]
    body: BodyStream | None = None
    data = None
    if request.body_exists:
        body = BodyStream(request, limit, body_idle_timeout)
        data = body.chunks()
        if length is not None:
            headers[hdrs.CONTENT_LENGTH] = str(length)
    elif request.method in {"POST", "PUT", "PATCH"}:
        headers[hdrs.CONTENT_LENGTH] = "0"

    url = _upstream_url(upstream, route, request)
    response: web.StreamResponse | None = None
    try:
        async with upstream.session.request(request.method, url, headers=headers, data=data,
                                            allow_redirects=False) as answer:
            if body is not None and body.too_large:
                raise BodyTooLargeError
            answer_headers = downstream_response_headers(answer.headers)
            size = answer.content_length
            if size is not None and size <= SMALL_BODY and request.method != "HEAD":
                # A small answer of known size goes out in one write with its headers; only
                # large or open-ended ones are streamed.
                return web.Response(status=answer.status, reason=answer.reason,
                                    headers=answer_headers, body=await answer.read())
            response = web.StreamResponse(status=answer.status, reason=answer.reason,
                                          headers=answer_headers)
            if answer.content_length is not None:
                response.content_length = answer.content_length
            try:
                await _to_client(response.prepare(request))
                if request.method != "HEAD":
                    async for chunk in answer.content.iter_chunked(READ_CHUNK):
                        await _to_client(response.write(chunk))
                await _to_client(response.write_eof())
            except ClientGoneError:
                # The client left during the download; leaving the block drops the
                # unfinished upstream connection instead of returning it to the pool.
                log.info("client_gone_mid_response", upstream=upstream.name)
            return response
    except BodyTooLargeError:
        metrics.BODY_TOO_LARGE.labels("streamed").inc()
        return too_large_response(request, limit)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _upstream_failure(request, upstream, body, response, limit, exc)


async def _to_client(write: Awaitable[object]) -> None:
    """A write to the client; its failure means the client left, not the upstream."""
    try:
        await write
    except ConnectionResetError:
        raise ClientGoneError from None


def _client_closed_response() -> web.Response:
    # Nobody is left to read it; the status (nginx's "client closed request") is for the
    # access log and metrics.
    response = web.Response(status=499, reason="Client Closed Request")
    response.force_close()
    return response


def _upstream_failure(request: web.Request, upstream: Upstream, body: BodyStream | None,
                      response: web.StreamResponse | None, limit: int,
                      exc: BaseException) -> web.StreamResponse:
    if body is not None and body.too_large:
        metrics.BODY_TOO_LARGE.labels("streamed").inc()
        return too_large_response(request, limit)
    if body is not None and body.stalled:
        log.info("client_stalled_mid_upload", upstream=upstream.name, received=body.received)
        response = problem_response(408, "request_timeout",
                                    "The request body stopped arriving.",
                                    request_id=request.get(REQUEST_ID))
        response.force_close()
        return response
    if body is not None and body.client_gone:
        log.info("client_gone_mid_upload", upstream=upstream.name, received=body.received)
        return _client_closed_response()
    if response is not None and response.prepared:
        # Half an answer has gone out: cut the connection so that the client sees a
        # truncated response, never a complete-looking one.
        log.warning("upstream_failed_mid_response", upstream=upstream.name,
                    error=type(exc).__name__)
        metrics.UPSTREAM_ERRORS.labels(upstream.name, "mid_response").inc()
        if request.transport is not None:
            request.transport.abort()
        return response
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        metrics.UPSTREAM_ERRORS.labels(upstream.name, "timeout").inc()
        log.warning("upstream_timeout", upstream=upstream.name)
        raise GatewayTimeoutError() from None
    kind = "connect" if isinstance(exc, aiohttp.ClientConnectorError) else "protocol"
    metrics.UPSTREAM_ERRORS.labels(upstream.name, kind).inc()
    log.warning("upstream_failed", upstream=upstream.name, kind=kind, error=type(exc).__name__)
    raise BadGatewayError() from None
