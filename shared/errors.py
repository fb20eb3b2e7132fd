"""The error types every service raises. One middleware (shared.web) renders them."""

from __future__ import annotations


class ServiceError(Exception):
    """An error the client may be told about: an HTTP status, a stable code, a message."""

    status = 500
    code = "internal_error"
    message = "An unexpected error occurred."

    def __init__(self, message: str | None = None, *, code: str | None = None,
                 headers: dict[str, str] | None = None, **extra: object) -> None:
        self.message = message or type(self).message
        self.code = code or type(self).code
        self.headers = dict(headers or {})
        # Extra members of the problem document (e.g. "field" or "retryAfter").
        self.extra = extra
        super().__init__(self.message)


class BadRequestError(ServiceError):
    status = 400
    code = "bad_request"
    message = "The request is not valid."


class ValidationError(BadRequestError):
    code = "validation_error"

    def __init__(self, field: str, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code, field=field)
        self.field = field


class UnauthorizedError(ServiceError):
    status = 401
    code = "unauthorized"
    message = "Authentication is required."


class ForbiddenError(ServiceError):
    status = 403
    code = "forbidden"
    message = "This action is not allowed."


class NotFoundError(ServiceError):
    status = 404
    code = "not_found"
    message = "The resource was not found."


class MethodNotAllowedError(ServiceError):
    status = 405
    code = "method_not_allowed"
    message = "This method is not allowed here."


class ConflictError(ServiceError):
    status = 409
    code = "conflict"
    message = "The request conflicts with the current state."


class PayloadTooLargeError(ServiceError):
    status = 413
    code = "payload_too_large"
    message = "The request body is too large."


class UnsupportedMediaTypeError(ServiceError):
    status = 415
    code = "unsupported_media_type"
    message = "This content type is not supported."


class RangeNotSatisfiableError(ServiceError):
    status = 416
    code = "range_not_satisfiable"
    message = "The requested range cannot be served."


class RateLimitedError(ServiceError):
    status = 429
    code = "rate_limited"
    message = "Too many requests. Try again later."

    def __init__(self, retry_after: int, message: str | None = None, *,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        retry_after = max(1, int(retry_after))
        merged = {"Retry-After": str(retry_after), **(headers or {})}
        super().__init__(message, code=code, headers=merged, retryAfter=retry_after)
        self.retry_after = retry_after


class BadGatewayError(ServiceError):
    status = 502
    code = "bad_gateway"
    message = "An upstream service failed to answer."


class ServiceUnavailableError(ServiceError):
    status = 503
    code = "service_unavailable"
    message = "The service is temporarily unavailable. Try again later."

    def __init__(self, message: str | None = None, *, retry_after: int | None = None,
                 code: str | None = None) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        super().__init__(message, code=code, headers=headers)


class GatewayTimeoutError(ServiceError):
    status = 504
    code = "gateway_timeout"
    message = "An upstream service took too long to answer."
