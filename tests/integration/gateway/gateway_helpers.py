"""What the gateway integration tests share: environments, a stack on loopback, a client
that speaks to the gateway the way a browser does, and a small streaming test upstream."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from PIL import Image
from yarl import URL

from services.gateway.app import create_app
from services.gateway.settings import load_settings
from shared.config import KeySet, Secret
from shared.identity import INTERNAL_TOKEN_HEADER, internal_codec
from shared.runner import listening
from shared.tokens import Claims
from tests.support import AUTH_COOKIE

GOOD_PASSWORD = "violet-harbor-tangent-42"
USERNAME = "Runner"
BROWSER_UA = "pytest-browser/1.0"
BOUNDARY = "tempo-test-boundary"


def gateway_env(base_env: Mapping[str, str], *, auth_url: str, media_url: str,
                **extra: str) -> dict[str, str]:
    env = {
        **base_env,
        "Upstreams__Auth": auth_url,
        "Upstreams__Media": media_url,
        "Upstreams__ConnectTimeoutSeconds": "2",
        "Upstreams__ReadTimeoutSeconds": "10",
    }
    env.update(extra)
    return env


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(filename: str, data: bytes, content_type: str) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n").encode() \
        + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def server_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def start_gateway(aiohttp_server: Any, env: Mapping[str, str], **kwargs: Any
                        ) -> TestServer:
    return await aiohttp_server(create_app(load_settings(env)), **kwargs)


def set_cookie(response: aiohttp.ClientResponse, name: str = AUTH_COOKIE) -> Any:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.getall("Set-Cookie", []):
        jar.load(header)
    return jar.get(name)


@dataclass
class Browser:
    """Requests to a gateway as a browser on its own origin would make them."""

    session: aiohttp.ClientSession
    base: str
    token: str | None = None

    @property
    def origin(self) -> str:
        return self.base

    def headers(self, method: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"User-Agent": BROWSER_UA}
        if self.token is not None:
            headers["Cookie"] = f"{AUTH_COOKIE}={self.token}"
        if method in {"POST", "PUT", "PATCH", "DELETE"}:
            headers["Origin"] = self.origin
        headers.update(extra or {})
        return headers

    async def request(self, method: str, path: str, *, headers: Mapping[str, str] | None = None,
                      **kwargs: Any) -> aiohttp.ClientResponse:
        # The path goes out exactly as written, percent-escapes included.
        url = URL(f"{self.base}{path}", encoded=True)
        response = await self.session.request(method, url,
                                              headers=self.headers(method, headers),
                                              allow_redirects=False, **kwargs)
        await response.read()
        return response

    async def register(self, username: str = USERNAME, password: str = GOOD_PASSWORD
                       ) -> aiohttp.ClientResponse:
        return await self.request("POST", "/api/auth/register",
                                  json={"username": username, "password": password})

    async def login(self, username: str = USERNAME, password: str = GOOD_PASSWORD
                    ) -> aiohttp.ClientResponse:
        response = await self.request("POST", "/api/auth/login",
                                      json={"username": username, "password": password})
        cookie = set_cookie(response)
        if response.status == 200 and cookie is not None:
            self.token = cookie.value
        return response

    async def sign_up(self) -> str:
        response = await self.register()
        assert response.status == 201, await response.text()
        response = await self.login()
        assert response.status == 200, await response.text()
        assert self.token is not None
        return self.token


def identity_claims(internal_key: str, audience: str, token: str) -> Claims:
    return internal_codec(KeySet(Secret(internal_key)), audience).verify(token)


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    header_names: list[str]
    size: int = 0
    sha256: str = ""
    complete: bool = False
    error: str | None = None


@dataclass
class EchoUpstream:
    """A real aiohttp app standing in for media where its behaviour is not the point: it
    streams request bodies (counting and hashing them) and streams large answers."""

    received: list[Received] = field(default_factory=list)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    # A multidict: a test may send a header twice.
    extra_response_headers: CIMultiDict[str] = field(default_factory=CIMultiDict)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024**3)
        app.router.add_get("/health", self.health)
        app.router.add_route("*", "/{path:.*}", self.echo)
        return app

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def echo(self, request: web.Request) -> web.StreamResponse:
        delay = float(request.query.get("sleep", "0"))
        if delay:
            await asyncio.sleep(delay)
        record = Received(request.method, request.raw_path.split("?")[0],
                          request.rel_url.raw_query_string,
                          dict(request.headers), list(request.headers.keys()))
        self.received.append(record)
        digest = hashlib.sha256()
        try:
            async for chunk in request.content.iter_any():
                record.size += len(chunk)
                digest.update(chunk)
            record.complete = True
        except BaseException as exc:  # the body broke off: what some tests want to see
            record.error = type(exc).__name__
            raise
        finally:
            record.sha256 = digest.hexdigest()
            self.finished.set()
        stream_bytes = int(request.query.get("stream", "0"))
        if stream_bytes:
            response = web.StreamResponse(headers=self.extra_response_headers)
            response.content_type = "application/octet-stream"
            await response.prepare(request)
            block = b"x" * 65536
            sent = 0
            while sent < stream_bytes:
                part = block[: min(len(block), stream_bytes - sent)]
                await response.write(part)
                sent += len(part)
            await response.write_eof()
            return response
        return web.json_response(
            {"method": record.method, "path": record.path, "query": record.query,
             "size": record.size, "sha256": record.sha256,
             "identity": request.headers.get(INTERNAL_TOKEN_HEADER)},
            headers=self.extra_response_headers)


class TcpRelay:
    """A real TCP hop in front of PostgreSQL that a test can cut and restore, to see what
    the gateway does when its database connection breaks."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers.difference_update((writer, up_writer))

    async def cut(self) -> None:
        """Stop accepting and break every open connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            transport = writer.transport
            transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()

    def url(self, database_url: str) -> str:
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(database_url)
        netloc = parts.netloc.rsplit("@", 1)
        credentials = f"{netloc[0]}@" if len(netloc) == 2 else ""
        return urlunsplit((parts.scheme, f"{credentials}127.0.0.1:{self.port}", parts.path,
                           parts.query, ""))


async def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return True
        await asyncio.sleep(interval)
    return False


class ProductionServer:
    """An app served the way ``python -m`` serves it (``shared.runner``), on loopback."""

    def __init__(self, app: web.Application, ssl_context: Any = None) -> None:
        self._serving = listening(app, host="127.0.0.1", port=0, ssl_context=ssl_context)
        self.port = 0

    async def __aenter__(self) -> ProductionServer:
        self.port = await self._serving.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._serving.__aexit__(*exc)
