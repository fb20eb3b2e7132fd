"""The whole stack on one machine: PostgreSQL, secrets, roles, and the three services.

``python -m deploy.stack`` (what ``make run`` calls) starts an embedded PostgreSQL under
``./var/pg`` unless ``Database__Url`` is set, generates secrets on first run into
``./var/secrets``, gives each service its own database role, starts auth, media and
gateway as separate processes, and stays in the foreground with their logs prefixed by
name until Ctrl-C or SIGTERM. A service that dies is reported and restarted with backoff.

The same runner is a Python API for tests::

    async with Stack(tmp_path, admin_url=url, env={"Log__Level": "warning"}) as stack:
        stack.url                      # the gateway's base URL
        await stack.kill("media")      # SIGKILL; restarted by the supervisor
        await stack.wait_healthy("media")

Its parts: ``base`` (services, ports, timings), ``runner`` (``Stack``), ``background``
(``BackgroundStack``) and ``cli`` (the command line).
"""

from deploy.stack.background import BackgroundStack
from deploy.stack.base import (
    DEFAULT_PORTS,
    ROOT,
    SERVICES,
    Service,
    StackError,
    database_url_for,
    free_port,
)
from deploy.stack.cli import main, setup_code_env
from deploy.stack.runner import Stack

__all__ = [
    "DEFAULT_PORTS", "ROOT", "SERVICES", "BackgroundStack", "Service", "Stack", "StackError",
    "database_url_for", "free_port", "main", "setup_code_env",
]
