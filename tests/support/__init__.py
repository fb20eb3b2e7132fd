"""Helpers the tests share: secrets, service environments, database admin, raw HTTP and
slow clients (the last two in their own modules, imported by name)."""

from tests.support.database import (
    copy_database,
    create_database,
    create_template,
    drop_database,
    drop_restore_roles,
    make_restore_target,
    restore_roles,
    run,
    server_answers,
)
from tests.support.env import (
    AUTH_COOKIE,
    CI,
    DEV_AUTH_COOKIE,
    ROOT,
    internal_headers,
    service_env,
    strong_secret,
    with_database,
    with_password,
    with_user,
)

__all__ = [
    "AUTH_COOKIE",
    "CI",
    "DEV_AUTH_COOKIE",
    "ROOT",
    "copy_database",
    "create_database",
    "create_template",
    "drop_database",
    "drop_restore_roles",
    "internal_headers",
    "make_restore_target",
    "restore_roles",
    "run",
    "server_answers",
    "service_env",
    "strong_secret",
    "with_database",
    "with_password",
    "with_user",
]
