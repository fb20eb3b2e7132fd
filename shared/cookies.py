"""The sign-in cookie's name: one rule for auth, which sets it, and the gateway, which reads
it, both from ``Auth__CookieSecure``.

A Secure cookie (production) is named with the ``__Host-`` prefix: a browser then keeps it
only if it came from this very host with Secure, ``Path=/`` and no Domain, so a sibling
subdomain can neither plant one nor shadow it. Browsers refuse the prefix on a cookie
without Secure, so plain-HTTP development keeps the bare name.
"""

from __future__ import annotations

from shared.config import PRODUCTION, Env

AUTH_COOKIE = "authToken"
HOST_PREFIX = "__Host-"
COOKIE_SECURE_SETTING = "Auth__CookieSecure"


def auth_cookie_name(secure: bool) -> str:
    return f"{HOST_PREFIX}{AUTH_COOKIE}" if secure else AUTH_COOKIE


def load_cookie_secure(env: Env, environment: str) -> bool:
    """``Auth__CookieSecure``: true unless development asks for plain-HTTP cookies."""
    secure = env.bool(COOKIE_SECURE_SETTING, True)
    if not secure and environment == PRODUCTION:
        env.problem(COOKIE_SECURE_SETTING,
                    "may be false only when App__Environment is development")
    return secure
