"""HTTP handlers: read the request, call the flows in accounts, write camelCase JSON."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from services.auth import accounts, store
from services.auth.audit import Origin
from services.auth.keys import AUTH_SETTINGS, HASHER, USER_TOKENS
from services.auth.settings import AuthSettings
from shared.audit import page_json, page_query
from shared.errors import UnauthorizedError, ValidationError
from shared.identity import identity_of, require_user
from shared.keys import DB_POOL
from shared.web import json_response, optional_str, read_json, require_str

# Only ever hashed or compared, never stored as text: NUL is a character like any other.
PASSWORD_FIELDS = ("password", "confirmPassword", "currentPassword", "newPassword")


def _services(request: web.Request) -> accounts.Services:
    app = request.app
    return accounts.Services(pool=app[DB_POOL], hasher=app[HASHER],
                             settings=app[AUTH_SETTINGS], tokens=app[USER_TOKENS])


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def set_auth_cookie(response: web.StreamResponse, settings: AuthSettings, token: str) -> None:
    # No Domain: the cookie belongs to this host alone (its __Host- name demands it).
    response.set_cookie(settings.cookie_name, token, max_age=settings.token_lifetime_seconds,
                        path="/", secure=settings.cookie_secure, httponly=True, samesite="Lax")


def clear_auth_cookie(response: web.StreamResponse, settings: AuthSettings) -> None:
    response.del_cookie(settings.cookie_name, path="/", secure=settings.cookie_secure,
                        httponly=True, samesite="Lax")


def _session_body(issued: accounts.Issued) -> dict[str, Any]:
    return {"userId": str(issued.user.id), "username": issued.user.username,
            "expiresAt": iso(issued.expires_at)}


async def get_registration_available(request: web.Request) -> web.Response:
    available, code_required = await accounts.registration_available(_services(request))
    return json_response({"registrationAvailable": available,
                          "setupCodeRequired": code_required})


async def register(request: web.Request) -> web.Response:
    data = await read_json(request, nul_allowed=PASSWORD_FIELDS)
    username = require_str(data, "username")
    password = require_str(data, "password")
    confirm = optional_str(data, "confirmPassword")
    setup_code = optional_str(data, "setupCode")
    user = await accounts.register(_services(request), Origin.of(request), username, password,
                                   confirm, setup_code)
    return json_response({"message": "User registered successfully", "userId": str(user.id),
                          "username": user.username}, status=201)


async def login(request: web.Request) -> web.Response:
    data = await read_json(request, nul_allowed=PASSWORD_FIELDS)
    username = require_str(data, "username")
    password = require_str(data, "password")
    services = _services(request)
    issued = await accounts.login(services, Origin.of(request), username, password)
    response = json_response(_session_body(issued))
    set_auth_cookie(response, services.settings, issued.token)
    return response


async def logout(request: web.Request) -> web.Response:
    services = _services(request)
    await accounts.logout(services, identity_of(request), Origin.of(request))
    response = json_response({"message": "Logged out successfully"})
    clear_auth_cookie(response, services.settings)
    return response


async def get_me(request: web.Request) -> web.Response:
    user = await accounts.current_user(_services(request), identity_of(request))
    return json_response({"userId": str(user.id), "username": user.username,
                          "createdAt": iso(user.created_at),
                          "lastLoginAt": iso(user.last_login_at)})


async def change_password(request: web.Request) -> web.Response:
    services = _services(request)
    identity = identity_of(request)
    # Who is asking is settled before the body is read: an ended session learns nothing.
    await accounts.current_session(services, identity)
    data = await read_json(request, nul_allowed=PASSWORD_FIELDS)
    current = require_str(data, "currentPassword")
    new = require_str(data, "newPassword")
    issued = await accounts.change_password(services, identity, Origin.of(request), current,
                                            new)
    response = json_response(_session_body(issued))
    set_auth_cookie(response, services.settings, issued.token)
    return response


async def list_sessions(request: web.Request) -> web.Response:
    identity = identity_of(request)
    sessions = await accounts.list_sessions(_services(request), identity)
    return json_response({"sessions": [
        {"id": str(session.id), "createdAt": iso(session.created_at),
         "expiresAt": iso(session.expires_at), "ip": session.ip,
         "userAgent": session.user_agent, "current": session.jti == identity.session_id}
        for session in sessions
    ]})


async def delete_session(request: web.Request) -> web.Response:
    try:
        session_id = uuid.UUID(request.match_info["id"])
    except ValueError:
        raise ValidationError("id", "'id' must be a session id (a UUID).",
                              code="invalid_field") from None
    services = _services(request)
    identity = identity_of(request)
    target = await accounts.revoke_session(services, identity, Origin.of(request), session_id)
    response = web.Response(status=204)
    if target.jti == identity.session_id:
        clear_auth_cookie(response, services.settings)
    return response


async def get_audit(request: web.Request) -> web.Response:
    """The caller's audit records, newest first; ``limit`` and ``cursor`` page them."""
    try:
        user_id = uuid.UUID(require_user(request))
    except ValueError:
        raise UnauthorizedError() from None
    limit, after = page_query(request)
    async with request.app[DB_POOL].acquire() as connection:
        entries = await store.select_audit_page(connection, user_id, limit, after)
    return json_response(page_json(entries, limit, "auth"))
