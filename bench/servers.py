"""The small servers the gateway benchmark needs besides the stack.

``python -m bench.servers upstream --port N`` answers every GET with a small JSON body: the
one endpoint every path in the gateway benchmark ends at.

``python -m bench.servers bare-proxy --port N --upstream URL`` is the least an aiohttp
proxy can do (no checks, no headers): what the gateway's framework costs before its own work.

``python -m bench.servers lean-proxy --port N --upstream URL`` is the same aiohttp server in
front of a minimal keep-alive client instead of aiohttp's: how much of the floor is the client.

``python -m bench.servers verifier --port N`` is what nginx ``auth_request`` calls: it checks
the sign-in cookie with the same JWT code the services use (``shared.tokens``) and
answers 204 or 401. It reads the key from ``JWT__SecretKey`` and the issuer and audience
from ``JWT__Issuer`` / ``JWT__Audience`` (default Tempo), as the services do.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any
from urllib.parse import urlsplit

from aiohttp import ClientSession, web

from shared.config import KeySet, Secret
from shared.cookies import auth_cookie_name
from shared.service import use_uvloop
from shared.tokens import TokenCodec, TokenError

# The name the gateway reads with production settings, so one cookie serves both.
AUTH_COOKIE = auth_cookie_name(secure=True)

BODY = b'{"id":"0b3f4a52-2f5e-4c84-9d0a-6c1f1a0e9d11","status":"ok","items":[1,2,3]}'


def upstream_app() -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", answer)
    return app


def verifier_app() -> web.Application:
    # The services' own Section__Key names, so the verifier reads the same environment.
    env = os.environ
    codec = TokenCodec(KeySet(Secret(env["JWT__SecretKey"])),
                       issuer=env.get("JWT__Issuer", "Tempo"),
                       audience=env.get("JWT__Audience", "Tempo"),
                       lifetime_seconds=7 * 86400)

    async def verify(request: web.Request) -> web.Response:
        token = request.cookies.get(AUTH_COOKIE)
        try:
            if not token:
                raise TokenError("no cookie")
            codec.verify(token)
        except TokenError:
            return web.Response(status=401)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/verify", verify)
    return app


def bare_proxy_app(upstream: str) -> web.Application:
    """The least an aiohttp proxy can do: no checks, no headers, one pooled session."""
    session_key = web.AppKey("session", ClientSession)

    async def session_context(app: web.Application):
        async with ClientSession(upstream) as session:
            app[session_key] = session
            yield

    async def forward(request: web.Request) -> web.Response:
        async with request.app[session_key].get(request.path_qs) as answer:
            body = await answer.read()
            return web.Response(body=body, status=answer.status,
                                content_type=answer.content_type)

    app = web.Application()
    app.cleanup_ctx.append(session_context)
    app.router.add_route("GET", "/{tail:.*}", forward)
    return app


class _UpstreamConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that reads Content-Length answers, nothing else."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.buffer = bytearray()
        self.head: tuple[int, bytes, int] | None = None
        self.waiter: asyncio.Future[tuple[int, bytes, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionResetError("upstream closed"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            del self.buffer[:end + 4]
            status_line, _, header_block = head.partition(b"\r\n")
            length = 0
            content_type = b"application/octet-stream"
            for line in header_block.split(b"\r\n"):
                name, _, value = line.partition(b":")
                lowered = name.lower()
                if lowered == b"content-length":
                    length = int(value)
                elif lowered == b"content-type":
                    content_type = value.strip()
            self.head = (int(status_line.split(b" ", 2)[1]), content_type, length)
        status, content_type, length = self.head
        if len(self.buffer) >= length and self.waiter is not None:
            body = bytes(self.buffer[:length])
            del self.buffer[:length]
            self.head = None
            waiter, self.waiter = self.waiter, None
            waiter.set_result((status, content_type, body))

    async def get(self, raw: bytes) -> tuple[int, bytes, bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


def lean_proxy_app(upstream: str) -> web.Application:
    """An aiohttp server in front of a minimal keep-alive client: what the proxy floor would
    be without aiohttp's client (GET with Content-Length answers only; a measurement aid)."""
    parts = urlsplit(upstream)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    idle: list[_UpstreamConnection] = []

    async def connection() -> _UpstreamConnection:
        while idle:
            candidate = idle.pop()
            if not candidate.closed:
                return candidate
        _, protocol = await asyncio.get_running_loop().create_connection(
            _UpstreamConnection, host, port)
        return protocol

    async def forward(request: web.Request) -> web.Response:
        upstream_connection = await connection()
        raw = f"GET {request.path_qs} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        status, content_type, body = await upstream_connection.get(raw)
        idle.append(upstream_connection)
        return web.Response(body=body, status=status,
                            headers={"Content-Type": content_type.decode()})

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("kind", choices=("upstream", "verifier", "bare-proxy", "lean-proxy"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", help="the bare proxy's upstream base URL")
    args = parser.parse_args()
    use_uvloop()
    if args.kind == "upstream":
        app = upstream_app()
    elif args.kind == "verifier":
        app = verifier_app()
    elif args.kind == "bare-proxy":
        app = bare_proxy_app(args.upstream)
    else:
        app = lean_proxy_app(args.upstream)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
