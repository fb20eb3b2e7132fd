"""Middleware and helpers every service uses: request ids, problem+json errors, JSON bodies."""

from __future__ import annotations

import json
import re
import secrets
import time
import traceback
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import structlog
from aiohttp import web

from shared import parsing
from shared.errors import (
    BadRequestError,
    PayloadTooLargeError,
    ServiceError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from shared.keys import COMMON_SETTINGS, DB_POOL, REQUEST_ID

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUEST_ID_HEADER = "X-Request-ID"
PROBLEM_JSON = "application/problem+json"
MAX_JSON_BYTES = 64 * 1024
_REQUEST_ID_FORMAT = re.compile(r"[A-Za-z0-9._:-]{8,128}")

_GENERIC_BY_STATUS = {
    400: ("bad_request", "The request is not valid."),
    401: ("unauthorized", "Authentication is required."),
    403: ("forbidden", "This action is not allowed."),
    404: ("not_found", "The resource was not found."),
    405: ("method_not_allowed", "This method is not allowed here."),
    413: ("payload_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "This content type is not supported."),
}

log = structlog.get_logger("http")


def new_request_id() -> str:
    return secrets.token_hex(16)


def well_formed_request_id(value: str | None) -> bool:
    return value is not None and _REQUEST_ID_FORMAT.fullmatch(value) is not None


def problem_document(status: int, code: str, message: str, *, request_id: str | None,
                     extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An RFC 9457 problem document. ``error`` repeats the message where Tempo's client reads it."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": message,
        "status": status,
        "code": code,
        "detail": message,
        "error": message,
    }
    if request_id:
        body["requestId"] = request_id
    if extra:
        body.update(extra)
    return body


def problem_response(status: int, code: str, message: str, *, request_id: str | None,
                     extra: Mapping[str, Any] | None = None,
                     headers: Mapping[str, str] | None = None) -> web.Response:
    body = problem_document(status, code, message, request_id=request_id, extra=extra)
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_JSON,
                        headers=headers)


def generic_message(status: int) -> tuple[str, str]:
    """The code and message for ``status`` when nothing more may be said."""
    return _GENERIC_BY_STATUS.get(status, ("error", "The request failed."))


def request_id_middleware(trust_incoming: Callable[[web.Request], bool]) -> Any:
    """Give every request an id: kept from the caller when trusted and well formed, else new.

    The id is bound into every log line written while the request is served and returned
    in ``X-Request-ID``.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        incoming = request.headers.get(REQUEST_ID_HEADER)
        if well_formed_request_id(incoming) and trust_incoming(request):
            request_id = incoming
        else:
            request_id = new_request_id()
        request[REQUEST_ID] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            if not response.prepared:
                response.headers[REQUEST_ID_HEADER] = request_id
            return response
        except web.HTTPException as exc:
            status = exc.status
            exc.headers[REQUEST_ID_HEADER] = request_id
            raise
        finally:
            log.info("request", method=request.method, path=request.path, status=status,
                     duration_ms=round((time.perf_counter() - started) * 1000, 2))
            structlog.contextvars.unbind_contextvars("request_id")

    return middleware


def trust_always(_request: web.Request) -> bool:
    return True


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ServiceErrors and HTTP errors become problem+json; anything else a generic 500."""
    request_id = request.get(REQUEST_ID)
    try:
        return await handler(request)
    except ServiceError as exc:
        return problem_response(exc.status, exc.code, exc.message, request_id=request_id,
                                extra=exc.extra, headers=exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = _GENERIC_BY_STATUS.get(exc.status, ("error", exc.reason))
        headers = {k: v for k, v in exc.headers.items()
                   if k.lower() in {"allow", "retry-after", "location"}}
        return problem_response(exc.status, code, message, request_id=request_id,
                                headers=headers)
    except (ConnectionResetError, TimeoutError) as exc:
        # The client went away or the read timed out: nothing to answer, nothing to alarm.
        log.info("request_aborted", reason=type(exc).__name__)
        raise
    except Exception:
        log.exception("unhandled_error")
        extra = None
        settings = request.app.get(COMMON_SETTINGS)
        if settings is not None and settings.development:
            extra = {"traceback": traceback.format_exc()}
        return problem_response(500, "internal_error", "An unexpected error occurred.",
                                request_id=request_id, extra=extra)


async def read_json(request: web.Request, max_bytes: int = MAX_JSON_BYTES, *,
                    nul_allowed: Collection[str] = ()) -> dict[str, Any]:
    """The request body as a JSON object: 415 if not JSON, 413 if too big, 400 if malformed,
    nested too deep or holding text that cannot be stored (see ``shared.parsing.loads``,
    which ``nul_allowed`` is passed to)."""
    if request.content_type != "application/json":
        raise UnsupportedMediaTypeError("The request body must be application/json.")
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLargeError(f"The request body must be at most {max_bytes} bytes.")
    body = bytearray()
    async for chunk in request.content.iter_chunked(16 * 1024):
        body.extend(chunk)
        if len(body) > max_bytes:
            raise PayloadTooLargeError(f"The request body must be at most {max_bytes} bytes.")
    try:
        data = parsing.loads(body, nul_allowed=nul_allowed)
    except parsing.JsonRefusedError as exc:
        if exc.field is not None:
            raise ValidationError(exc.field, exc.message, code=exc.code) from None
        message = ("The request body is not valid JSON." if exc.code == "malformed_json"
                   else exc.message)
        raise BadRequestError(message, code=exc.code) from None
    if not isinstance(data, dict):
        raise BadRequestError("The request body must be a JSON object.", code="malformed_json")
    return data


def require_str(data: Mapping[str, Any], field: str) -> str:
    value = data.get(field)
    if value is None:
        raise ValidationError(field, f"'{field}' is required.", code="missing_field")
    if not isinstance(value, str):
        raise ValidationError(field, f"'{field}' must be a string.", code="invalid_field")
    return value


def optional_str(data: Mapping[str, Any], field: str) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(field, f"'{field}' must be a string.", code="invalid_field")
    return value


def page_limit(value: str | None, *, default: int, maximum: int) -> int:
    """A ``limit`` query parameter: a whole number from 1 to ``maximum``; absent, ``default``."""
    if value is None or value == "":
        return default
    limit = parsing.whole_number(value, minimum=1, maximum=maximum)
    if limit is None:
        raise ValidationError("limit", f"'limit' must be a whole number from 1 to {maximum}.",
                              code="invalid_limit")
    return limit


def json_response(data: Any, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers)


async def health(_request: web.Request) -> web.Response:
    """The process is alive and its event loop answers."""
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """The database answers and this service's migrations are applied."""
    pool = request.app.get(DB_POOL)
    try:
        if pool is None:
            raise RuntimeError("no pool")
        async with pool.acquire(timeout=2) as connection:
            await connection.fetchval("SELECT 1", timeout=2)
    except Exception:  # any failure means "not ready"; the cause is logged
        log.warning("not_ready", exc_info=True)
        return problem_response(503, "not_ready", "The service is not ready.",
                                request_id=request.get(REQUEST_ID))
    return json_response({"status": "ready"})
