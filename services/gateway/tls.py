"""TLS in the gateway itself, for deployments without a TLS proxy in front, and the
plain-HTTP listener whose only answer is a redirect to HTTPS."""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from yarl import URL

from services.gateway.headers import add_security_headers, parser_error_headers
from services.gateway.settings import TlsSettings
from shared.keys import PARSER_ERROR_HEADERS
from shared.runner import ProblemRunner

log = structlog.get_logger("tls")

_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")


def server_ssl_context(tls: TlsSettings) -> ssl.SSLContext | None:
    """The listening socket's TLS context; raises ``ssl.SSLError``/``OSError`` on bad files."""
    if tls.cert_file is None or tls.key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


def redirect_location(host_header: str | None, raw_path: str, tls: TlsSettings) -> str | None:
    """Where to send a plain-HTTP request; None when its Host cannot be used and no
    ``Server__RedirectHost`` is configured."""
    host = (host_header or "").strip()
    if host.startswith("["):
        host = host[: host.find("]") + 1] if "]" in host else ""
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if not _HOST.fullmatch(host):
        if tls.redirect_host is None:
            return None
        host = tls.redirect_host
    port = tls.public_https_port
    netloc = host if port == 443 else f"{host}:{port}"
    # Only an origin-form target is kept; anything else (absolute-form, '*') goes to '/'.
    path = raw_path if raw_path.startswith("/") and not raw_path.startswith("//") else "/"
    return f"https://{netloc}{path}"


def redirect_app(tls: TlsSettings) -> web.Application:
    async def redirect(request: web.Request) -> web.StreamResponse:
        location = redirect_location(request.headers.get("Host"), request.raw_path, tls)
        if location is None:
            raise web.HTTPBadRequest(text="A Host header is required.")
        # Encoded already: the path and query go back exactly as the client sent them.
        raise web.HTTPPermanentRedirect(URL(location, encoded=True))

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", redirect)
    app.on_response_prepare.append(add_security_headers)
    app[PARSER_ERROR_HEADERS] = parser_error_headers
    return app


def redirect_listener(tls: TlsSettings, host: str):
    """A cleanup context: serve the redirect on ``Server__RedirectPort`` when it is set."""

    async def context(_app: web.Application) -> AsyncIterator[None]:
        if tls.redirect_port is None:
            yield
            return
        runner = ProblemRunner(redirect_app(tls))
        await runner.setup()
        site = web.TCPSite(runner, host, tls.redirect_port)
        await site.start()
        log.info("redirect_listening", host=host, port=tls.redirect_port)
        try:
            yield
        finally:
            await runner.cleanup()

    return context
