"""The small servers the gateway benchmark needs besides the stack.

``python -m bench.servers upstream --port N`` answers every GET with a small JSON body: the
one endpoint every path in the gateway benchmark ends at.

``python -m bench.servers verifier --port N`` is what nginx ``auth_request`` calls: it checks
the ``authToken`` cookie with the same JWT code the services use (``shared.tokens``) and
answers 204 or 401. It reads the key from ``JWT__SecretKey`` and the issuer and audience
from ``JWT__Issuer`` / ``JWT__Audience`` (default Tempo), as the services do.
"""

from __future__ import annotations

import argparse
import os

from aiohttp import web

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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("kind", choices=("upstream", "verifier"))
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    use_uvloop()
    app = upstream_app() if args.kind == "upstream" else verifier_app()
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
