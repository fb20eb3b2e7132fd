"""The small servers the gateway benchmark needs besides the stack.

``python -m bench.servers upstream --port N`` answers every GET with a small JSON body: the
one endpoint every path in the gateway benchmark ends at.

``python -m bench.servers bare-proxy --port N --upstream URL`` is the least an aiohttp
proxy can do (no checks, no headers): what the gateway's framework costs before its own work.

``python -m bench.servers verifier --port N`` is what nginx ``auth_request`` calls: it checks
the ``authToken`` cookie with the same JWT code the services use (``shared.tokens``) and
answers 204 or 401. It reads the key from ``JWT__SecretKey`` and the issuer and audience
from ``JWT__Issuer`` / ``JWT__Audience`` (default Tempo), as the services do.
"""

from __future__ import annotations

import argparse
import os

from aiohttp import ClientSession, web

from shared.config import KeySet, Secret
from shared.service import use_uvloop
from shared.tokens import TokenCodec, TokenError

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
        token = request.cookies.get("authToken")
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("kind", choices=("upstream", "verifier", "bare-proxy"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", help="the bare proxy's upstream base URL")
    args = parser.parse_args()
    use_uvloop()
    if args.kind == "upstream":
        app = upstream_app()
    elif args.kind == "verifier":
        app = verifier_app()
    else:
        app = bare_proxy_app(args.upstream)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
