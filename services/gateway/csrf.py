"""Cross-site request defence in depth, on top of the cookie's ``SameSite=Lax``.

A state-changing request that carries the sign-in cookie must say where it comes
from: its ``Origin`` (or, when a browser sent none, the origin of its ``Referer``) must be
the gateway's own origin or one of the configured CORS origins.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL, lower-cased, default port left out."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"


class OriginPolicy:
    def __init__(self, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        self._any = "*" in allowed
        self._allowed = frozenset(o for o in (origin_of(a) for a in allowed if a != "*") if o)

    def allows(self, *, origin: str | None, referer: str | None, own_origin: str | None
               ) -> bool:
        if origin is not None and origin != "null":
            claimed = origin_of(origin)
        elif origin is None and referer:
            claimed = origin_of(referer)
        else:
            claimed = None
        if claimed is None:
            return False
        if self._any:
            return True
        return claimed == own_origin or claimed in self._allowed

    @staticmethod
    def own_origin(scheme: str, host: str | None) -> str | None:
        if not host:
            return None
        return origin_of(f"{scheme}://{host}")
