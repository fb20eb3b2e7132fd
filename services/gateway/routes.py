"""The public API, one row per operation, and the gateway's own routes.

Only what is listed here reaches an upstream: any other path under ``/api`` is a 404 at
the gateway. The OpenAPI document is checked against this table by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class BodyLimit(Enum):
    JSON = "json"
    MEDIA = "media"
    IMPORT = "import"


@dataclass(frozen=True, slots=True)
class ApiRoute:
    method: str
    path: str
    upstream: str  # "auth" or "media"
    public: bool = False
    # Login and register (and the password check) spend the strict per-IP budget too.
    strict_rate_limit: bool = False
    body: BodyLimit = BodyLimit.JSON
    # HEAD is routed only where the upstream answers it (downloads, for their headers).
    head: bool = False

    @property
    def upstream_path(self) -> str:
        return self.path.removeprefix("/api")


API_ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("GET", "/api/auth/registration-available", "auth", public=True),
    ApiRoute("POST", "/api/auth/register", "auth", public=True, strict_rate_limit=True),
    ApiRoute("POST", "/api/auth/login", "auth", public=True, strict_rate_limit=True),
    ApiRoute("POST", "/api/auth/logout", "auth"),
    ApiRoute("GET", "/api/auth/me", "auth"),
    ApiRoute("POST", "/api/auth/password", "auth", strict_rate_limit=True),
    ApiRoute("GET", "/api/auth/sessions", "auth"),
    ApiRoute("DELETE", "/api/auth/sessions/{id}", "auth"),
    ApiRoute("POST", "/api/media", "media", body=BodyLimit.MEDIA),
    ApiRoute("GET", "/api/media", "media"),
    ApiRoute("GET", "/api/media/{id}", "media"),
    ApiRoute("PATCH", "/api/media/{id}", "media"),
    ApiRoute("DELETE", "/api/media/{id}", "media"),
    ApiRoute("GET", "/api/media/{id}/content", "media", head=True),
    ApiRoute("POST", "/api/imports", "media", body=BodyLimit.IMPORT),
    ApiRoute("GET", "/api/imports", "media"),
    ApiRoute("GET", "/api/imports/{id}", "media"),
    ApiRoute("DELETE", "/api/imports/{id}", "media"),
    ApiRoute("GET", "/api/export", "media"),
    # Answered by the gateway from both services' trails (services/gateway/audit.py).
    ApiRoute("GET", "/api/audit", "auth"),
)

LOGOUT_PATH = "/api/auth/logout"
AUDIT_PATH = "/api/audit"

# The gateway's own routes, answered without an upstream and without a cookie.
HEALTH_PATH = "/health"
READY_PATH = "/ready"
OPENAPI_PATH = "/openapi.json"
OWN_PATHS = (HEALTH_PATH, READY_PATH, OPENAPI_PATH)
