"""The production nginx configuration, run locally in front of a gateway on this machine.

``deploy/nginx/nginx.conf`` is written for the compose network (unprivileged container,
upstream ``gateway:8080``, certificates under ``/etc/nginx/certs``, the placeholder public
name ``tempo.example.org``). ``render`` rewrites only those addresses, paths and the name
(``localhost`` unless told), so what runs here and in the tests is the same configuration
that ships.

``python -m deploy.nginx_local --cert C --key K`` serves HTTPS in front of ``make run``'s
gateway (see the README: "HTTPS on this machine").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

NGINX_DIR = Path(__file__).resolve().parent / "nginx"
PRODUCTION_CONF = NGINX_DIR / "nginx.conf"
ERROR_PAGE_CONF = NGINX_DIR / "errors" / "error-page.conf"
PUBLIC_NAME_LINE = "server_name tempo.example.org;"
MEDIA_LIMIT_LINE = "client_max_body_size 53477376;"
IMPORT_LIMIT_LINE = "client_max_body_size 501048576;"


class NginxError(Exception):
    pass


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(path).exists()),
        None)


@dataclass(frozen=True, slots=True)
class LocalNginx:
    """Addresses and files for one local nginx instance."""

    workdir: Path
    gateway: str            # host:port
    cert_file: Path
    key_file: Path
    http_port: int
    https_port: int
    host: str = "127.0.0.1"
    server_name: str = "localhost"
    media_limit_bytes: int | None = None
    import_limit_bytes: int | None = None

    def render(self, text: str | None = None) -> str:
        conf = PRODUCTION_CONF.read_text() if text is None else text
        tmp = self.workdir / "tmp"
        replacements = [
            # First: the workdir itself may live under /tmp. Not a temporary file: the
            # container's /tmp paths in the shipped file, moved into this instance's workdir.
            ("/tmp/", f"{tmp}/"),  # noqa: S108  # nosec B108
            ("error_log /dev/stderr warn;", f"error_log {self.workdir}/error.log warn;"),
            ("access_log /dev/stdout tempo;", f"access_log {self.workdir}/access.log tempo;"),
            ("server gateway:8080;", f"server {self.gateway};"),
            ("listen 8080", f"listen {self.host}:{self.http_port}"),
            ("listen 8443 ssl", f"listen {self.host}:{self.https_port} ssl"),
            (PUBLIC_NAME_LINE, f"server_name {self.server_name};"),
            ("return 301 https://$server_name$request_uri;",
             f"return 301 https://$server_name:{self.https_port}$request_uri;"),
            ("/etc/nginx/certs/fullchain.pem", str(self.cert_file)),
            ("/etc/nginx/certs/privkey.pem", str(self.key_file)),
            ("include /etc/nginx/errors/error-page.conf;",
             f"include {self.workdir / 'error-page.conf'};"),
            ("root /var/www/acme;", f"root {self.workdir / 'acme'};"),
        ]
        if self.media_limit_bytes is not None:
            replacements.append((MEDIA_LIMIT_LINE,
                                 f"client_max_body_size {self.media_limit_bytes};"))
        if self.import_limit_bytes is not None:
            replacements.append((IMPORT_LIMIT_LINE,
                                 f"client_max_body_size {self.import_limit_bytes};"))
        for old, new in replacements:
            if old not in conf:
                raise NginxError(f"deploy/nginx/nginx.conf no longer contains {old!r}")
            conf = conf.replace(old, new)
        return conf

    def render_error_page(self) -> str:
        conf = ERROR_PAGE_CONF.read_text()
        old = "root /etc/nginx/errors;"
        if old not in conf:
            raise NginxError(f"deploy/nginx/errors/error-page.conf no longer contains {old!r}")
        return conf.replace(old, f"root {NGINX_DIR / 'errors'};")

    def write(self) -> Path:
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        (self.workdir / "acme").mkdir(exist_ok=True)
        (self.workdir / "error-page.conf").write_text(self.render_error_page())
        path = self.workdir / "nginx.conf"
        path.write_text(self.render())
        return path


class NginxProcess:
    """nginx in the foreground (``daemon off``) as a child process; stopped with SIGQUIT."""

    def __init__(self, config: LocalNginx, *, nginx: str | None = None) -> None:
        self.config = config
        self.nginx = nginx or find_nginx()
        self.process: subprocess.Popen[bytes] | None = None

    def command(self, *extra: str) -> list[str]:
        if self.nginx is None:
            raise NginxError("nginx is not installed (Debian: apt-get install nginx)")
        conf = self.config.write()
        return [self.nginx, "-p", str(self.config.workdir), "-c", str(conf),
                "-e", str(self.config.workdir / "error.log"), *extra]

    def test(self) -> None:
        result = subprocess.run([*self.command("-t")], capture_output=True, text=True,  # noqa: S603
                                check=False)
        if result.returncode != 0:
            raise NginxError(f"nginx -t failed:\n{result.stderr}")

    def start(self, timeout: float = 10.0) -> None:
        self.test()
        self.process = subprocess.Popen(  # noqa: S603
            [*self.command("-g", "daemon off;")], stdin=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        import socket

        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NginxError(f"nginx exited with {self.process.returncode}: "
                                 f"{self.error_log()}")
            with contextlib.suppress(OSError), socket.create_connection(
                    (self.config.host, self.config.https_port), timeout=0.5):
                return
            time.sleep(0.05)
        self.stop()
        raise NginxError(f"nginx did not listen within {timeout}s: {self.error_log()}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def error_log(self) -> str:
        path = self.config.workdir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> NginxProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.nginx_local",
                                     description="HTTPS on this machine in front of the "
                                     "gateway started by `make run`.")
    parser.add_argument("--cert", required=True, type=Path, help="certificate chain (PEM)")
    parser.add_argument("--key", required=True, type=Path, help="private key (PEM)")
    parser.add_argument("--gateway", default="127.0.0.1:8080")
    parser.add_argument("--server-name", default="localhost",
                        help="the name nginx answers for (the certificate's)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--https-port", type=int, default=8443)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tempo-nginx-") as workdir:
        config = LocalNginx(Path(workdir), args.gateway, args.cert.resolve(),
                            args.key.resolve(), args.http_port, args.https_port,
                            server_name=args.server_name)
        with NginxProcess(config):
            print(f"HTTPS at https://{args.server_name}:{args.https_port}/ -> {args.gateway} "
                  "(Ctrl-C stops it)", flush=True)
            asyncio.run(_wait_for_signal())
    return 0


if __name__ == "__main__":
    sys.exit(main())
