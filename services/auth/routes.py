"""The auth service's routes, in one table."""

from __future__ import annotations

from aiohttp import web

from services.auth import handlers
from shared.web import health, ready

ROUTES = [
    web.get("/health", health),
    web.get("/ready", ready),
    web.get("/auth/registration-available", handlers.get_registration_available),
    web.post("/auth/register", handlers.register),
    web.post("/auth/login", handlers.login),
    web.post("/auth/logout", handlers.logout),
    web.get("/auth/me", handlers.get_me),
    web.post("/auth/password", handlers.change_password),
    web.get("/auth/sessions", handlers.list_sessions),
    web.delete("/auth/sessions/{id}", handlers.delete_session),
    web.get("/auth/audit", handlers.get_audit, allow_head=False),
]


def setup_routes(app: web.Application) -> None:
    app.add_routes(ROUTES)
