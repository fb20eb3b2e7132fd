"""Slow clients through the shipped nginx: trickled login bodies from twenty addresses
leave the owner's sign-in answering, because nginx reads small bodies whole before the
gateway is asked and caps what each address has in progress."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.nginx_local import LocalNginx, NginxProcess, find_nginx
from deploy.stack import BackgroundStack, free_port
from tests.e2e.conftest import TlsFiles, require_tool
from tests.e2e.support_edge import PASSWORD, client_context, session, sign_in
from tests.support.slow_clients import Trickle, probe_during, slow_login_head

pytestmark = pytest.mark.timeout(300)


@dataclass
class SlowEdge:
    stack: BackgroundStack
    https_port: int
    ca_file: Path

    @property
    def https_url(self) -> str:
        return f"https://localhost:{self.https_port}"

    @property
    def origin(self) -> str:
        return self.https_url


@pytest.fixture(scope="module")
def slow_edge(make_stack: Callable[..., BackgroundStack], tls: TlsFiles,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlowEdge]:
    nginx_binary = require_tool("nginx", find_nginx())
    # nginx is the only peer the gateway believes about client addresses, as in compose.
    stack = make_stack(env={"Proxy__TrustedNetworks": "127.0.0.1/32",
                            "Limits__JsonBodyDeadlineSeconds": "2"})
    https_port, http_port = free_port(), free_port()
    nginx = NginxProcess(LocalNginx(tmp_path_factory.mktemp("nginx"),
                                    stack.service_url("gateway").split("//")[1],
                                    tls.cert_file, tls.key_file, http_port, https_port),
                         nginx=nginx_binary)
    nginx.start()
    try:
        yield SlowEdge(stack, https_port, tls.ca_file)
    finally:
        nginx.stop()


async def test_slow_login_bodies_through_nginx_leave_the_owner_signing_in(slow_edge):
    url = slow_edge.https_url
    async with session(slow_edge) as owner:
        await sign_in(owner, slow_edge)

        async def get(path: str) -> int:
            async with owner.get(f"{url}{path}") as response:
                await response.read()
                return response.status

        async def login() -> int:
            async with owner.post(f"{url}/api/auth/login", json={
                    "username": "runner", "password": PASSWORD}) as response:
                await response.read()
                return response.status

        probes = {"me": lambda: get("/api/auth/me"),
                  "registration-available": lambda: get("/api/auth/registration-available"),
                  "sessions": lambda: get("/api/auth/sessions"),
                  "login": login}
        attack = Trickle("127.0.0.1", slow_edge.https_port,
                         slow_login_head(f"localhost:{slow_edge.https_port}"),
                         ssl_context=client_context(slow_edge.ca_file),
                         server_hostname="localhost", duration=4.0)
        results = await probe_during(attack, probes, seconds=3.0, pause=0.2)

    assert {name for name, _, _ in results} == set(probes)
    late = [(name, code, round(took, 2)) for name, code, took in results
            if code != 200 or took > 1.0]
    assert late == []
    assert len(attack.answers) == 100
    # No slow client was answered with an error of the edge's own making.
    assert not [answer[:12] for answer in attack.answers if answer.startswith(b"HTTP/1.1 5")]
