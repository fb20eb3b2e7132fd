"""The internal identity: how the gateway tells auth and media who is calling.

For every proxied request the gateway mints a short-lived token signed with
``Internal__SecretKey`` (never the user-facing JWT key), with the target service as its
audience, carrying the user id (or ``anonymous``) and the user token's ``jti``. auth and
media accept nothing else: a request reaching them directly, without such a token, is 401.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

import structlog
from aiohttp import web

from shared.config import KeySet
from shared.errors import UnauthorizedError
from shared.keys import REQUEST_ID
from shared.tokens import TokenCodec, TokenError
from shared.web import Handler, problem_response

INTERNAL_TOKEN_HEADER = "X-Tempo-Identity"  # noqa: S105 - a header name, not a secret
INTERNAL_ISSUER = "tempo-gateway"
INTERNAL_LIFETIME_SECONDS = 60
ANONYMOUS = "anonymous"

log = structlog.get_logger("identity")


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str | None
    # The jti of the user's session token, so that auth can tell which session is "this one".
    session_id: str | None
    client_ip: str | None
    user_agent: str | None

    @property
    def authenticated(self) -> bool:
        return self.user_id is not None


# Set on the request by the middleware for handlers to read.
IDENTITY = web.RequestKey("identity", Identity)


def internal_codec(keys: KeySet, audience: str) -> TokenCodec:
    return TokenCodec(keys, issuer=INTERNAL_ISSUER, audience=audience,
                      lifetime_seconds=INTERNAL_LIFETIME_SECONDS)


def mint_internal_token(codec: TokenCodec, *, audience: str, user_id: str | None,
                        session_id: str | None, client_ip: str | None,
                        user_agent: str | None, now: float | None = None) -> str:
    extra = {"sid": session_id, "ip": client_ip, "ua": (user_agent or "")[:512] or None}
    token, _ = codec.issue(user_id or ANONYMOUS, now=now, audience=audience,
                           lifetime_seconds=INTERNAL_LIFETIME_SECONDS, extra=extra)
    return token


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def internal_identity_middleware(keys: KeySet, audience: str,
                                 public_paths: Iterable[str] = ("/health",)):
    """Refuse (401) every request without a valid internal token, except ``public_paths``."""
    codec = internal_codec(keys, audience)
    public = frozenset(public_paths)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in public:
            return await handler(request)
        token = request.headers.get(INTERNAL_TOKEN_HEADER)
        try:
            if not token:
                raise TokenError("missing internal token")
            claims = codec.verify(token)
        except TokenError as exc:
            log.warning("internal_token_refused", reason=str(exc), path=request.path)
            return problem_response(401, "unauthorized", "Authentication is required.",
                                    request_id=request.get(REQUEST_ID))
        user_id = None if claims.subject == ANONYMOUS else claims.subject
        request[IDENTITY] = Identity(
            user_id=user_id,
            session_id=_optional_str(claims.extra.get("sid")),
            client_ip=_optional_str(claims.extra.get("ip")),
            user_agent=_optional_str(claims.extra.get("ua")),
        )
        return await handler(request)

    return middleware


def identity_of(request: web.Request) -> Identity:
    return request[IDENTITY]


def require_user(request: web.Request) -> str:
    """The calling user's id; 401 when the gateway forwarded an anonymous call."""
    user_id = request[IDENTITY].user_id
    if user_id is None:
        raise UnauthorizedError()
    return user_id


def require_user_id(request: web.Request) -> UUID:
    """The calling user's id as a UUID; 401 for an anonymous call or an id that is none."""
    try:
        return UUID(require_user(request))
    except ValueError:
        raise UnauthorizedError() from None
