"""The stack runner: PostgreSQL (given or embedded), secrets, roles, and the three
services as supervised processes, restarted with backoff when they die."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

from deploy import roles
from deploy.generate_secrets import ensure_secrets
from deploy.rotation_files import ensure_previous_key_files
from deploy.rotation_files import secret_files as secret_files_of
from deploy.stack.base import (
    DEFAULT_PORTS,
    FAIL_FAST_AFTER,
    INITIAL_BACKOFF,
    MAX_BACKOFF,
    ROOT,
    SECRET_SETTINGS,
    SERVICES,
    STABLE_AFTER,
    STOP_GRACE,
    Service,
    StackError,
    database_url_for,
    die_with_parent,
)
from shared.config import DATABASE_PASSWORD, SETUP_CODE


class Stack:
    """PostgreSQL (given or embedded), secrets, roles, and the three supervised services."""

    def __init__(
        self,
        root: Path,
        *,
        ports: Mapping[str, int] | None = None,
        env: Mapping[str, str] | None = None,
        service_env: Mapping[str, Mapping[str, str]] | None = None,
        admin_url: str | None = None,
        database_url: str | None = None,
        database: str = "tempo",
        role_prefix: str = "tempo",
        development: bool = False,
        host: str = "127.0.0.1",
        echo: Callable[[str], None] | None = None,
        drop_database_on_exit: bool = False,
        startup_timeout: float = 60.0,
    ) -> None:
        self.root = Path(root).resolve()
        self.host = host
        self.database = database
        self.role_prefix = role_prefix
        self.development = development
        self.drop_database_on_exit = drop_database_on_exit
        self.startup_timeout = startup_timeout
        self._env = dict(env or {})
        self._service_env = {name: dict(values) for name, values in (service_env or {}).items()}
        self._given_database_url = database_url
        self.admin_url = admin_url
        self._echo = echo or (lambda line: None)
        self._pgserver = None
        self._closing = False
        self._session: aiohttp.ClientSession | None = None
        chosen = dict(DEFAULT_PORTS)
        chosen.update(ports or {})
        self.services = {name: Service(name, chosen[name]) for name in SERVICES}
        self.media_root = self.root / "media"
        self.secrets_dir = self.root / "secrets"
        self.logs_dir = self.root / "logs"
        self.role_names = {name: roles.role_name(role_prefix, name) for name in SERVICES}

    # ----------------------------------------------------------------- addresses
    @property
    def url(self) -> str:
        return self.service_url("gateway")

    def service_url(self, name: str) -> str:
        return f"http://{self.host}:{self.services[name].port}"

    def database_url(self, name: str) -> str:
        """The URL the service connects with (its password is in ``Database__Password_FILE``)."""
        return self.services[name].env["Database__Url"]

    def pid(self, name: str) -> int | None:
        process = self.services[name].process
        return None if process is None or process.returncode is not None else process.pid

    def logs(self, name: str) -> str:
        return "\n".join(self.services[name].tail)

    # ----------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> Stack:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.media_root.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        secret_files = ensure_secrets(self.secrets_dir)
        # Empty until a rotation (deploy/rotate.py) moves the current keys into them.
        secret_files.update({path.name: path for path
                             in ensure_previous_key_files(self.secrets_dir).values()})
        database_urls = await self._prepare_database(secret_files)
        for name, service in self.services.items():
            service.env = self._environment(name, database_urls[name], secret_files)
        await self.start_service("auth", wait=False)
        await self.start_service("media", wait=False)
        await self.wait_healthy("auth", timeout=self.startup_timeout)
        await self._grant_gateway()
        await self.start_service("gateway", wait=False)
        await self.wait_healthy("media", timeout=self.startup_timeout)
        await self._seal_audit()
        await self.wait_healthy("gateway", timeout=self.startup_timeout)

    async def stop(self) -> None:
        self._closing = True
        # The gateway first, so nothing is proxied to a service that is already going.
        for name in ("gateway", "media", "auth"):
            service = self.services[name]
            service.want_running = False
            service.changed.set()
            await self._terminate(service)
        for service in self.services.values():
            if service.supervisor is not None:
                service.supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await service.supervisor
                service.supervisor = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.drop_database_on_exit and self.admin_url and not self._given_database_url:
            await self._drop_database()
        if self._pgserver is not None:
            server, self._pgserver = self._pgserver, None
            await asyncio.get_running_loop().run_in_executor(None, server.cleanup)

    # ----------------------------------------------------------------- control
    async def start_service(self, name: str, *, wait: bool = True) -> None:
        service = self.services[name]
        service.want_running = True
        service.changed.set()
        if service.supervisor is None or service.supervisor.done():
            service.supervisor = asyncio.create_task(self._supervise(service),
                                                     name=f"supervise-{name}")
        if wait:
            await self.wait_healthy(name, timeout=self.startup_timeout)

    async def stop_service(self, name: str) -> None:
        """SIGTERM and wait; the service stays down until ``start_service``."""
        service = self.services[name]
        service.want_running = False
        service.changed.set()
        await self._terminate(service)

    async def kill(self, name: str, *, restart: bool = True) -> None:
        """SIGKILL the service's process group. With ``restart`` the supervisor brings it
        back after its backoff, as it would after a crash; without, it stays down."""
        service = self.services[name]
        if not restart:
            service.want_running = False
            service.changed.set()
        process = service.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def restart(self, name: str) -> None:
        await self.stop_service(name)
        await self.start_service(name)

    async def wait_healthy(self, name: str, *, timeout: float = 60.0,  # noqa: ASYNC109
                           path: str = "/health") -> None:
        """Until the service's current process answers 200 on ``path``."""
        service = self.services[name]
        deadline = time.monotonic() + timeout
        url = f"{self.service_url(name)}{path}"
        exits_before = len(service.exits)
        while True:
            process = service.process
            if process is not None and process.returncode is None and self._session:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with self._session.get(url) as response:
                        if response.status == 200:
                            return
            if service.exits and service.exits[-1] == 2 and not self._closing and \
                    (process is None or process.returncode is not None):
                raise StackError(f"{name} refused its settings:\n{self.logs(name)}")
            if len(service.exits) - exits_before >= FAIL_FAST_AFTER:
                raise StackError(f"{name} exited {FAIL_FAST_AFTER} times while starting:\n"
                                 f"{self.logs(name)}")
            if time.monotonic() > deadline:
                raise StackError(f"{name} did not answer {path} within {timeout:.0f}s:\n"
                                 f"{self.logs(name)}")
            await asyncio.sleep(0.1)

    # ----------------------------------------------------------------- internals
    async def _prepare_database(self, secret_files: dict[str, Path]) -> dict[str, str]:
        if self._given_database_url:
            return dict.fromkeys(SERVICES, self._given_database_url)
        if self.admin_url is None:
            self.admin_url = await self._start_pgserver()
        admin = await asyncpg.connect(self.admin_url)
        try:
            await roles.ensure_database(admin, self.database)
        finally:
            await admin.close()
        admin = await asyncpg.connect(self._admin_in_database())
        try:
            await roles.ensure_roles(admin, self.database, [
                roles.Role(name, self.role_names[name],
                           secret_files[f"db_{name}_password"].read_text().strip())
                for name in SERVICES
            ])
        finally:
            await admin.close()
        return {name: database_url_for(self.admin_url, user=self.role_names[name],
                                       database=self.database) for name in SERVICES}

    def _admin_in_database(self) -> str:
        assert self.admin_url is not None
        parts = urlsplit(self.admin_url)
        return urlunsplit((parts.scheme, parts.netloc, f"/{self.database}", parts.query, ""))

    async def _start_pgserver(self) -> str:
        with warnings.catch_warnings():
            # pgserver asks platformdirs for a runtime folder at import; without a login
            # session (no XDG_RUNTIME_DIR) it falls back to one under /tmp and warns about
            # it on the console the user is reading.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            import pgserver

        folder = self.root / "pg"
        self._echo(f"stack   | starting PostgreSQL in {folder}")
        loop = asyncio.get_running_loop()
        self._pgserver = await loop.run_in_executor(
            None, lambda: pgserver.get_server(folder, cleanup_mode="stop"))
        return str(self._pgserver.get_uri())

    async def _grant_gateway(self) -> None:
        if self._given_database_url:
            return
        admin = await asyncpg.connect(self._admin_in_database())
        try:
            if not await roles.grant_revocation_reader(admin, self.role_names["gateway"]):
                raise StackError("auth is up but auth.revoked_tokens does not exist")
        finally:
            await admin.close()

    async def _seal_audit(self) -> None:
        """Once auth and media have migrated: their audit tables become append-only for
        their roles (owned by the administrator, INSERT and SELECT granted)."""
        if self._given_database_url:
            return
        admin = await asyncpg.connect(self._admin_in_database())
        try:
            await roles.seal_audit_tables(admin, {name: self.role_names[name]
                                                  for name in ("auth", "media")})
        finally:
            await admin.close()

    async def _drop_database(self) -> None:
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            await roles.drop_roles(admin, list(self.role_names.values()))
        finally:
            await admin.close()

    def _environment(self, name: str, database_url: str, secret_files: dict[str, Path]
                     ) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if "__" not in key}
        env["PYTHONUNBUFFERED"] = "1"
        settings = {
            "App__Environment": "development" if self.development else "production",
            "Server__Host": self.host,
            "Server__Port": str(self.services[name].port),
            "Database__Url": database_url,
        }
        # Only the secrets this service reads; a given database URL carries its own password.
        for setting, file_name in secret_files_of(name).items():
            if setting == DATABASE_PASSWORD and self._given_database_url:
                continue
            if setting == SETUP_CODE:
                # Production mode only, and never over a code given in the shell:
                # setup_code_env decides.
                continue
            settings[f"{setting}_FILE"] = str(secret_files[file_name])
        if name in {"auth", "gateway"} and self.development:
            # Browsers drop Secure cookies on plain-HTTP localhost; the gateway then reads
            # the cookie by its unprefixed name.
            settings["Auth__CookieSecure"] = "false"
        if name == "media":
            settings["MediaStorage__RootPath"] = str(self.media_root)
        if name == "gateway":
            settings["Upstreams__Auth"] = self.service_url("auth")
            settings["Upstreams__Media"] = self.service_url("media")
        overrides = {**self._env, **self._service_env.get(name, {})}
        for key in SECRET_SETTINGS:
            # A secret given directly wins over the generated file (both would be refused).
            if key in overrides:
                settings.pop(f"{key}_FILE", None)
            if f"{key}_FILE" in overrides:
                settings.pop(key, None)
        settings.update(overrides)
        env.update(settings)
        return env

    async def _spawn(self, service: Service) -> asyncio.subprocess.Process:
        log_file = (self.logs_dir / f"{service.name}.log").open("ab")
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", f"services.{service.name}",
                cwd=ROOT, env=service.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent,
            )
        except BaseException:
            log_file.close()
            raise
        service.starts += 1
        service.pump = asyncio.create_task(self._pump(service, process, log_file),
                                           name=f"log-{service.name}")
        return process

    async def _pump(self, service: Service, process: asyncio.subprocess.Process,
                    log_file) -> None:
        assert process.stdout is not None
        prefix = f"{service.name:<8}| "
        try:
            async for raw in process.stdout:
                log_file.write(raw)
                line = raw.decode("utf-8", "replace").rstrip("\n")
                service.tail.append(line)
                self._echo(prefix + line)
        finally:
            log_file.close()

    async def _supervise(self, service: Service) -> None:
        loop = asyncio.get_running_loop()
        backoff = INITIAL_BACKOFF
        while not self._closing:
            if not service.want_running:
                service.changed.clear()
                await service.changed.wait()
                continue
            started = loop.time()
            service.process = await self._spawn(service)
            code = await service.process.wait()
            service.exits.append(code)
            if self._closing or not service.want_running:
                continue
            if loop.time() - started > STABLE_AFTER:
                backoff = INITIAL_BACKOFF
            self._echo(f"stack   | {service.name} exited with status {code}; "
                       f"restarting in {backoff:.1f}s")
            service.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(service.changed.wait(), backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _terminate(self, service: Service) -> None:
        process = service.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        # Anything the service itself started in its group goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
