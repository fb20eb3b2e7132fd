"""Which headers cross the gateway, and the security headers on every response.

Requests going upstream lose hop-by-hop headers (RFC 9110 §7.6.1, including any named in
``Connection``), every credential the browser sent (``Cookie``, ``Authorization``), and
anything that could pass for an internal or proxy header: the upstream learns who the
caller is only from the internal identity token the gateway mints.

Responses coming back lose hop-by-hop headers, the upstream's banner and any CORS headers
(CORS is the gateway's decision). Then the security headers are set on every response the
gateway sends, proxied or its own, including the answers to requests the HTTP parser
refused (``parser_error_headers``): an upstream may make them stricter, never looser.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

from shared.keys import REQUEST_ID
from shared.web import REQUEST_ID_HEADER

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade",
})
_DROP_FROM_CLIENT = HOP_BY_HOP | {
    "host", "cookie", "authorization", "expect", "content-length", "forwarded",
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port",
    "x-real-ip", "x-request-id",
}
_DROP_FROM_UPSTREAM = HOP_BY_HOP | {"server", "date", "x-powered-by", "content-length"}
_INTERNAL_PREFIX = "x-tempo-"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob:; connect-src 'self'; font-src 'self'; worker-src 'self'; "
    "manifest-src 'self'; frame-ancestors 'self'; base-uri 'self'; form-action 'self'; "
    "object-src 'none'"
)
PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), display-capture=(), geolocation=(), "
    "gyroscope=(), magnetometer=(), microphone=(), midi=(), payment=(), usb=()"
)
HSTS = "max-age=63072000; includeSubDomains"
_STRICT_REFERRER = frozenset({"no-referrer", "same-origin", "strict-origin",
                              "strict-origin-when-cross-origin"})
_FIXED = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-XSS-Protection", "1; mode=block"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Permissions-Policy", PERMISSIONS_POLICY),
)
# The request says whether it arrived over HTTPS (directly or via a trusted proxy).
SCHEME = web.RequestKey("scheme", str)


def _connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    tokens: set[str] = set()
    for value in headers.getall(hdrs.CONNECTION, ()):
        tokens.update(token.strip().lower() for token in value.split(",") if token.strip())
    return tokens


def upstream_request_headers(incoming: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    extra = _connection_tokens(incoming)
    result: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lowered = name.lower()
        if lowered in _DROP_FROM_CLIENT or lowered in extra \
                or lowered.startswith(_INTERNAL_PREFIX):
            continue
        result.add(name, value)
    return result


def downstream_response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    extra = _connection_tokens(upstream)
    result: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.items():
        lowered = name.lower()
        if lowered in _DROP_FROM_UPSTREAM or lowered in extra \
                or lowered.startswith(_INTERNAL_PREFIX) \
                or lowered.startswith("access-control-"):
            continue
        if lowered == "location" and value.startswith("/") and not value.startswith("//"):
            # Upstream paths are the public ones without the /api prefix.
            value = f"/api{value}"
        result.add(name, value)
    return result


def _is_api(path: str) -> bool:
    return path.startswith("/api/") or path in {
        "/health", "/ready", "/openapi.json"}


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: runs for every response the application sends."""
    set_security_headers(request, response)


def parser_error_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """``PARSER_ERROR_HEADERS``: for the answer to a request the HTTP parser refused.

    No header of that request can be believed, so only a TLS connection to the gateway
    itself counts as HTTPS (``secure`` looks at the socket; behind nginx, nginx adds HSTS).
    """
    if request.secure:
        request[SCHEME] = "https"
    set_security_headers(request, response)


def set_security_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    headers = response.headers
    headers.popall(hdrs.SERVER, None)
    for name, value in _FIXED:
        headers[name] = value
    # Assigning replaces every field of that name: an upstream's duplicates go too.
    frame = headers.get("X-Frame-Options", "").upper()
    headers["X-Frame-Options"] = "DENY" if frame == "DENY" else "SAMEORIGIN"
    referrer = headers.get("Referrer-Policy", "").lower()
    headers["Referrer-Policy"] = (referrer if referrer in _STRICT_REFERRER
                                  else "strict-origin-when-cross-origin")
    # Every policy in the header is enforced, so adding an upstream's to ours can only
    # narrow it. The header's grammar is a comma-separated list of policies (CSP3 §3.1):
    # one field carries them all, and each security header is sent exactly once.
    policies = [CONTENT_SECURITY_POLICY]
    for policy in headers.getall("Content-Security-Policy", ()):
        if policy not in policies:
            policies.append(policy)
    headers["Content-Security-Policy"] = ", ".join(policies)
    if request.get(SCHEME) == "https":
        headers["Strict-Transport-Security"] = HSTS
    cache = headers.get(hdrs.CACHE_CONTROL, "").lower()
    if response.status >= 400 or _is_api(request.path):
        # An upstream may keep a response private to the browser (media with ETags),
        # never make it storable by shared caches.
        if "no-store" not in cache and "private" not in cache:
            headers[hdrs.CACHE_CONTROL] = "no-store"
    elif not cache:
        headers[hdrs.CACHE_CONTROL] = "no-cache"
    request_id = request.get(REQUEST_ID)
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
