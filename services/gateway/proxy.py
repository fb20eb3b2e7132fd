"""Streaming requests to an upstream and its answer back, one pooled session per upstream.

A small body is read whole before the upstream is called; a streamed one is never held
whole: its chunks go to the upstream as they arrive and are counted on the way, and
response chunks go to the client as they arrive. When a request body goes over its limit,
slows down too much, or the client disappears, the body stream raises, which aborts the
upstream request mid-body so that the upstream sees a broken upload, never a complete one.

A client holds an upstream connection for longer than the upstream takes to answer only
with a streamed body or a streamed answer; each upstream counts those, and requests with
a small body, per client, and refuses one beyond ``Upstreams__InFlightPerClient``, so that
no client holds more than a small share of the pool. A bodiless request with a small
answer is not counted: the answer is read whole before the client is written to. Health
checks have a connection of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from urllib.parse import quote

import aiohttp
import structlog
from aiohttp import hdrs, web
from yarl import URL

from services.gateway import metrics
from services.gateway.bodies import (
    BodyPolicy,
    BodyStream,
    BodyTimeoutError,
    BodyTooLargeError,
    ClientGoneError,
    read_small,
)
from services.gateway.clientip import ClientInfo
from services.gateway.headers import downstream_response_headers, upstream_request_headers
from services.gateway.routes import ApiRoute
from services.gateway.settings import UpstreamSettings
from services.gateway.slots import ClientSlots
from shared.config import KeySet
from shared.errors import BadGatewayError, GatewayTimeoutError, RateLimitedError, ServiceError
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
# How long a client refused for holding too much is told to wait.
BUSY_RETRY_AFTER = 2
UPLOADS_RETRY_AFTER = 5


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
        # Requests each client has holding a connection of this upstream's pool for as
        # long as the client takes (a streamed body, a streamed answer).
        self.in_flight = ClientSlots(settings.in_flight_per_client)
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._health_session: aiohttp.ClientSession | None = None
        self._health_check: asyncio.Future[bool] | None = None
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
        # /ready must not queue behind a pool that proxied requests have filled: one
        # connection of its own, which concurrent checks share (see ``healthy``).
        self._health_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, keepalive_timeout=30),
            cookie_jar=aiohttp.DummyCookieJar(), timeout=HEALTH_TIMEOUT)

    async def close(self) -> None:
        if self._health_check is not None:
            self._health_check.cancel()
            self._health_check = None
        for session in (self._session, self._health_session):
            if session is not None:
                await session.close()
        self._session = self._health_session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "upstream used before the application started"
        return self._session

    async def healthy(self) -> bool:
        # Probes that arrive while one is under way wait for its answer: a flood of /ready
        # costs the upstream one request at a time.
        check = self._health_check
        if check is None or check.done():
            check = self._health_check = asyncio.ensure_future(self._probe())
        return await asyncio.shield(check)

    async def _probe(self) -> bool:
        assert self._health_session is not None, "upstream used before the application started"
        try:
            async with self._health_session.get(f"{self.base_url}/health") as resp:
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


def _refusal(request: web.Request, error: ServiceError) -> web.Response:
    response = problem_response(error.status, error.code, error.message,
                                request_id=request.get(REQUEST_ID), extra=error.extra,
                                headers=error.headers)
    # The body was not read: the connection cannot carry another request.
    response.force_close()
    return response


def _busy_response(request: web.Request, upstream: Upstream, client: ClientInfo
                   ) -> web.Response:
    metrics.CLIENT_LIMITED.labels(f"in_flight_{upstream.name}").inc()
    log.info("client_in_flight_limit", upstream=upstream.name, client_ip=client.ip)
    return _refusal(request, RateLimitedError(
        BUSY_RETRY_AFTER, "Too many requests in progress. Try again shortly.",
        code="too_many_in_flight"))


async def _timeout_response(request: web.Request, message: str) -> web.Response:
    request_id = request.get(REQUEST_ID)
    response = problem_response(408, "request_timeout", message, request_id=request_id,
                                headers={REQUEST_ID_HEADER: request_id} if request_id else None)
    response.force_close()
    # A client this slow is not waited for again: the connection closes once the answer
    # is out, without the lingering read that aiohttp gives the rest of an unread body.
    with contextlib.suppress(ConnectionError):
        await response.prepare(request)
        await response.write_eof()
    request.protocol.force_close()
    return response


async def forward(request: web.Request, route: ApiRoute, upstream: Upstream,
                  policy: BodyPolicy, identity_token: str, client: ClientInfo
                  ) -> web.StreamResponse:
    """Send the request upstream and stream the answer back."""
    length = request.content_length
    limit = policy.limit
    if length is not None and length > limit:
        metrics.BODY_TOO_LARGE.labels("declared").inc()
        return too_large_response(request, limit)

    headers = upstream_request_headers(request.headers)
    headers[INTERNAL_TOKEN_HEADER] = identity_token
    headers[REQUEST_ID_HEADER] = request[REQUEST_ID]
    url = _upstream_url(upstream, route, request)
    if not request.body_exists:
        if request.method in {"POST", "PUT", "PATCH"}:
            headers[hdrs.CONTENT_LENGTH] = "0"
        return await _exchange(request, upstream, url, headers, None, None, limit, client,
                               held=False)

    key = client.limit_key
    stream = policy.stream
    if stream is None:
        try:
            data = await read_small(request, limit, policy.deadline_seconds)
        except BodyTooLargeError:
            metrics.BODY_TOO_LARGE.labels("streamed").inc()
            return too_large_response(request, limit)
        except BodyTimeoutError:
            metrics.SLOW_BODIES.labels("deadline").inc()
            log.info("client_too_slow_small_body", upstream=upstream.name)
            return await _timeout_response(request, "The request body did not arrive in time.")
        except ClientGoneError:
            return _client_closed_response()
        if not upstream.in_flight.acquire(key):
            return _busy_response(request, upstream, client)
        try:
            return await _exchange(request, upstream, url, headers, data, None, limit, client,
                                   held=True)
        finally:
            upstream.in_flight.release(key)

    uploads = stream.uploads
    if not uploads.acquire(key):
        metrics.CLIENT_LIMITED.labels("uploads").inc()
        log.info("client_upload_limit", client_ip=client.ip)
        return _refusal(request, RateLimitedError(
            UPLOADS_RETRY_AFTER, "Too many uploads in progress. Try again shortly.",
            code="too_many_uploads"))
    try:
        if not upstream.in_flight.acquire(key):
            return _busy_response(request, upstream, client)
        try:
            if length is not None:
                headers[hdrs.CONTENT_LENGTH] = str(length)
            body = BodyStream(request, limit, stream)
            return await _exchange(request, upstream, url, headers, body.chunks(), body, limit,
                                   client, held=True)
        finally:
            upstream.in_flight.release(key)
    finally:
        uploads.release(key)


async def _exchange(request: web.Request, upstream: Upstream, url: URL,
                    headers: dict[str, str], data: object, body: BodyStream | None,
                    limit: int, client: ClientInfo, *, held: bool) -> web.StreamResponse:
    """One upstream request. ``held``: the client's in-flight slot is already taken; if not,
    a streamed answer takes one."""
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
            key = None
            if not held and request.method != "HEAD":
                # The client now sets the pace at which this connection is freed.
                key = client.limit_key
                if not upstream.in_flight.acquire(key):
                    return _busy_response(request, upstream, client)
            try:
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
            finally:
                if key is not None:
                    upstream.in_flight.release(key)
    except BodyTooLargeError:
        metrics.BODY_TOO_LARGE.labels("streamed").inc()
        return too_large_response(request, limit)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return await _upstream_failure(request, upstream, body, response, limit, exc)


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


async def _upstream_failure(request: web.Request, upstream: Upstream, body: BodyStream | None,
                      response: web.StreamResponse | None, limit: int,
                      exc: BaseException) -> web.StreamResponse:
    if body is not None and body.too_large:
        metrics.BODY_TOO_LARGE.labels("streamed").inc()
        return too_large_response(request, limit)
    if body is not None and body.stalled:
        kind = "rate" if body.too_slow else "idle"
        metrics.SLOW_BODIES.labels(kind).inc()
        log.info("client_stalled_mid_upload", upstream=upstream.name, received=body.received,
                 kind=kind)
        return await _timeout_response(request, "The request body arrived too slowly."
                                 if body.too_slow else "The request body stopped arriving.")
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
