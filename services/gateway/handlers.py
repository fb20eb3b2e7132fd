"""The gateway's handlers: the proxy for each API route, its own operational routes, and
the static web UI."""

from __future__ import annotations

import asyncio
from pathlib import Path, PurePosixPath

import structlog
from aiohttp import hdrs, web

from services.gateway.bodies import BodyPolicy
from services.gateway.keys import (
    CLIENT,
    LISTENER,
    OPENAPI_DOCUMENT,
    REVOKED,
    SETTINGS,
    UPSTREAMS,
    USER,
)
from services.gateway.proxy import forward
from services.gateway.routes import LOGOUT_PATH, ApiRoute
from shared.keys import REQUEST_ID
from shared.web import Handler, json_response, problem_response

log = structlog.get_logger("gateway")


def proxy_handler(api: ApiRoute, policy: BodyPolicy) -> Handler:
    logout = api.path == LOGOUT_PATH

    async def handler(request: web.Request) -> web.StreamResponse:
        upstream = request.app[UPSTREAMS][api.upstream]
        claims = request.get(USER)
        client = request[CLIENT]
        token = upstream.identity.token(
            claims.subject if claims is not None else None,
            claims.token_id if claims is not None else None,
            client.ip,
            request.headers.get(hdrs.USER_AGENT),
        )
        response = await forward(request, api, upstream, policy, token, client)
        if logout and claims is not None and 200 <= response.status < 300:
            # This gateway refuses the token at once; the others hear it from auth.
            request.app[REVOKED].add(claims.token_id, float(claims.expires_at))
        return response

    handler.__name__ = f"proxy_{api.method.lower()}_{api.path.strip('/').replace('/', '_')}"
    return handler


async def ready(request: web.Request) -> web.Response:
    """Ready when the revocation listener is live and both upstreams answer."""
    upstreams = request.app[UPSTREAMS]
    names = list(upstreams)
    results = await asyncio.gather(*(upstreams[name].healthy() for name in names))
    checks = {name: ("ok" if ok else "down") for name, ok in zip(names, results, strict=True)}
    checks["revocations"] = "ok" if request.app[LISTENER].connected else "down"
    if all(value == "ok" for value in checks.values()):
        return json_response({"status": "ready"})
    log.warning("not_ready", **checks)
    return problem_response(503, "not_ready", "The service is not ready.",
                            request_id=request.get(REQUEST_ID))


async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_DOCUMENT], content_type="application/json")


def _static_path(root: Path, relative: str) -> Path | None:
    """The file under ``root`` for a URL path, or None for anything odd or missing."""
    if not relative or relative.endswith("/"):
        relative += "index.html"
    if "\\" in relative or "\x00" in relative:
        return None
    parts = PurePosixPath(relative).parts
    if not parts or parts[0] == "api" or any(part.startswith(".") for part in parts):
        return None
    candidate = root.joinpath(*parts).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate


async def static_file(request: web.Request) -> web.StreamResponse:
    root = request.app[SETTINGS].static_root
    path = _static_path(root, request.match_info["path"])
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path)
