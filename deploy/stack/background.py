"""The stack on an event loop of its own, for synchronous callers."""

from __future__ import annotations

import asyncio
import threading

from deploy.stack.runner import Stack


class BackgroundStack:
    """A ``Stack`` run on an event loop of its own in a thread, driven with plain calls.

    For synchronous callers (pytest session fixtures, Playwright's sync API) that must not
    share their event loop with the stack's supervisors::

        with BackgroundStack(Stack(tmp, admin_url=url)) as stack:
            stack.url; stack.kill("auth", restart=False); stack.start_service("auth")
    """

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stack-loop",
                                        daemon=True)

    def _call(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __enter__(self) -> BackgroundStack:
        self._thread.start()
        try:
            self._call(self.stack.start())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._call(self.stack.stop(), timeout=120)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop.close()

    # The same control surface as Stack, synchronously.
    @property
    def url(self) -> str:
        return self.stack.url

    def service_url(self, name: str) -> str:
        return self.stack.service_url(name)

    def pid(self, name: str) -> int | None:
        return self.stack.pid(name)

    def logs(self, name: str) -> str:
        return self.stack.logs(name)

    def env(self, name: str) -> dict[str, str]:
        return dict(self.stack.services[name].env)

    def kill(self, name: str, *, restart: bool = True) -> None:
        self._call(self.stack.kill(name, restart=restart))

    def start_service(self, name: str) -> None:
        self._call(self.stack.start_service(name))

    def stop_service(self, name: str) -> None:
        self._call(self.stack.stop_service(name))

    def restart(self, name: str) -> None:
        self._call(self.stack.restart(name))

    def wait_healthy(self, name: str, *, timeout: float = 60.0, path: str = "/health") -> None:
        self._call(self.stack.wait_healthy(name, timeout=timeout, path=path))
