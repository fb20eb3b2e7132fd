"""Prometheus metrics on a listener of their own, never on the public port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from shared.keys import COMMON_SETTINGS

log = structlog.get_logger("metrics")


async def metrics(_request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(REGISTRY))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def metrics_listener(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context: serve /metrics on Metrics__Host:Metrics__Port when a port is set."""
    settings = app[COMMON_SETTINGS]
    if settings.metrics_port is None:
        yield
        return
    metrics_app = web.Application()
    metrics_app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(metrics_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.metrics_host, settings.metrics_port)
    await site.start()
    log.info("metrics_listening", host=settings.metrics_host, port=settings.metrics_port)
    try:
        yield
    finally:
        await runner.cleanup()
