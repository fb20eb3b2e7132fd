"""Gateway overhead: one upstream endpoint reached four ways, under the same load.

- direct: the load generator calls the tiny upstream itself;
- nginx: nginx as a plain reverse proxy (keep-alive to the upstream);
- gateway: the gateway with a valid sign-in cookie (JWT check, revocation lookup,
  rate limit set high enough never to trigger, security headers, internal identity);
- bare_aiohttp_proxy: the least an aiohttp proxy can do (no checks, no headers): the floor
  the framework sets before the gateway does any work of its own (not a target);
- lean_proxy: the same aiohttp server with a minimal keep-alive client instead of aiohttp's
  (GET with Content-Length answers only): how much of that floor is the client (not a
  target);
- auth_request: nginx ``auth_request`` to an aiohttp verifier doing the same JWT check,
  then proxying: the pattern people reach for instead of an in-process check.

The edge under test (nginx, the gateway, nginx with its verifier) is pinned to one core;
the load generator and the upstream share the other. Every variant gets the same split.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

from bench.common import (
    AUTH_COOKIE,
    PYTHON,
    Load,
    Processes,
    Report,
    Result,
    core_split,
    free_port,
    interleave,
    pin_tree,
    ratios,
    say,
    spread,
    stack,
    start_nginx,
    strong_secret,
    wait_http,
    work_dir,
    wrk,
)
from bench.servers import BODY

NAME = "gateway"
TARGETS = (("gateway_vs_nginx_rps", 0.5, True), ("gateway_vs_auth_request_rps", 2.0, True))
PATH = "/api/media"
VARIANTS = ("direct", "nginx", "lean_proxy", "bare_aiohttp_proxy", "gateway", "auth_request")


def nginx_http_block(upstream_port: int, verifier_port: int, plain_port: int,
                     auth_port: int) -> str:
    proxy = """
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;"""
    return f"""
    upstream tiny {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}
    upstream verifier {{ server 127.0.0.1:{verifier_port}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{plain_port} reuseport backlog=4096;
        location / {{ proxy_pass http://tiny; {proxy} }}
    }}
    server {{
        listen 127.0.0.1:{auth_port} reuseport backlog=4096;
        location = /_verify {{
            internal;
            proxy_pass http://verifier/verify;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            {proxy}
        }}
        location / {{ auth_request /_verify; proxy_pass http://tiny; {proxy} }}
    }}
"""


def check(url: str, headers: dict[str, str]) -> None:
    """One request by hand first: a variant answering 401 fast would measure nothing."""
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read()
        if response.status != 200 or body != BODY:
            raise RuntimeError(f"{url} answered {response.status} {body[:200]!r}")


def user_token(jwt_key: str) -> str:
    from shared.config import KeySet, Secret
    from shared.tokens import TokenCodec

    codec = TokenCodec(KeySet(Secret(jwt_key)), issuer="Tempo", audience="Tempo",
                       lifetime_seconds=86400)
    token, _ = codec.issue(str(uuid.uuid4()), token_id=secrets.token_hex(16))
    return token


def profile(url: str, cookie: dict[str, str], pid: int, seconds: int, cpus: list[int],
            out: Path) -> str:
    """py-spy samples the gateway under the same load; the functions that cost the most."""
    spy = shutil.which("py-spy") or str(Path(PYTHON).with_name("py-spy"))
    if not Path(spy).exists():
        return "py-spy is not installed (pip install py-spy) so no profile was taken"
    recorder = subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(seconds),
                                 "--rate", "500", "--format", "raw", "--output", str(out),
                                 "--nonblocking"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    wrk(url, seconds=seconds, connections=50, headers=cookie, cpus=cpus)
    recorder.wait(timeout=seconds + 30)
    return summarize_profile(out)


def summarize_profile(path: Path, top: int = 25) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame.split(" (")[0] + " " + frame.rsplit("/", 1)[-1].rstrip(")")
                  for frame in stack_text.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples; self time:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines.append("inclusive:")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


async def run(quick: bool, *, profile_to: Path | None = None) -> Report:
    edge, backend = core_split()
    seconds = 2 if quick else 6
    rounds = 3 if quick else 5
    connections = 50
    jwt_key = strong_secret()
    with work_dir("gateway-") as folder, Processes(folder) as processes:
        upstream_port, verifier_port = free_port(), free_port()
        bare_port, lean_port = free_port(), free_port()
        plain_port, auth_port = free_port(), free_port()
        upstream = processes.start(
            "upstream", [PYTHON, "-m", "bench.servers", "upstream", "--port",
                         str(upstream_port)], cpus=backend)
        verifier = processes.start(
            "verifier", [PYTHON, "-m", "bench.servers", "verifier", "--port",
                         str(verifier_port)], env={"JWT__SecretKey": jwt_key}, cpus=edge)
        bare = processes.start(
            "bare-proxy", [PYTHON, "-m", "bench.servers", "bare-proxy", "--port", str(bare_port),
                           "--upstream", f"http://127.0.0.1:{upstream_port}"], cpus=edge)
        lean = processes.start(
            "lean-proxy", [PYTHON, "-m", "bench.servers", "lean-proxy", "--port", str(lean_port),
                           "--upstream", f"http://127.0.0.1:{upstream_port}"], cpus=edge)
        nginx = start_nginx(processes, "nginx", folder / "nginx",
                            nginx_http_block(upstream_port, verifier_port, plain_port,
                                             auth_port), cpus=edge)
        wait_http(f"http://127.0.0.1:{upstream_port}/", process=upstream)
        wait_http(f"http://127.0.0.1:{plain_port}/")
        wait_http(f"http://127.0.0.1:{bare_port}/", process=bare)
        wait_http(f"http://127.0.0.1:{lean_port}/", process=lean)
        token = user_token(jwt_key)
        cookie = {"Cookie": f"{AUTH_COOKIE}={token}"}
        wait_http(f"http://127.0.0.1:{auth_port}/", process=verifier, headers=cookie)

        gateway_env = {
            "Upstreams__Media": f"http://127.0.0.1:{upstream_port}",
            "RateLimit__GlobalPerMinute": "1000000000",
            "RateLimit__GlobalBurst": "1000000",
        }
        async with stack(folder / "stack", env={"JWT__SecretKey": jwt_key},
                         service_env={"gateway": gateway_env}) as running:
            gateway_pid = running.pid("gateway")
            assert gateway_pid is not None
            pin_tree(gateway_pid, edge)
            urls = {
                "direct": f"http://127.0.0.1:{upstream_port}{PATH}",
                "nginx": f"http://127.0.0.1:{plain_port}{PATH}",
                "lean_proxy": f"http://127.0.0.1:{lean_port}{PATH}",
                "bare_aiohttp_proxy": f"http://127.0.0.1:{bare_port}{PATH}",
                "gateway": f"{running.url}{PATH}",
                "auth_request": f"http://127.0.0.1:{auth_port}{PATH}",
            }
            for url in urls.values():
                await asyncio.to_thread(check, url, cookie)
            say(f"gateway overhead: edge cores {edge}, load and upstream cores {backend}, "
                f"{rounds} rounds of {seconds}s, {connections} connections")

            # Whose CPU each path spends: the endpoint itself when called directly, else
            # only the edge in front of it.
            cpu_of = {"direct": [upstream.pid], "nginx": [nginx.pid],
                      "lean_proxy": [lean.pid], "bare_aiohttp_proxy": [bare.pid],
                      "gateway": [gateway_pid],
                      "auth_request": [nginx.pid, verifier.pid]}

            def load(name: str, duration: float = seconds):
                return lambda: wrk(urls[name], seconds=duration, connections=connections,
                                   headers=cookie, cpus=backend, cpu_of=cpu_of[name])

            for name in urls:  # warm every path before anything counts
                load(name, 1)()
            measured: dict[str, list[Load]] = await asyncio.to_thread(
                interleave, {name: load(name) for name in urls}, rounds)
            for url in urls.values():
                await asyncio.to_thread(check, url, cookie)
            if profile_to is not None:
                summary = await asyncio.to_thread(profile, urls["gateway"], cookie,
                                                  gateway_pid, seconds, backend, profile_to)
                print(summary, flush=True)
    return report(measured, quick=quick, seconds=seconds, rounds=rounds,
                  connections=connections)


def report(measured: dict[str, list[Load]], *, quick: bool, seconds: int, rounds: int,
           connections: int) -> Report:
    rps = {name: [load.requests_per_second for load in loads]
           for name, loads in measured.items()}
    cpu = {name: [load.cpu_us_per_request for load in loads]
           for name, loads in measured.items()}
    out = Report("Gateway overhead", header=("path", "req/s median (min–max)", "p50 ms",
                                             "p99 ms", "CPU µs/request", "errors"))
    for name in VARIANTS:
        loads = measured[name]
        out.rows.append((name, str(spread(rps[name])),
                         f"{spread([x.p50_ms for x in loads]).median:.2f}",
                         f"{spread([x.p99_ms for x in loads]).median:.2f}",
                         f"{spread(cpu[name]).median:.0f}",
                         str(sum(x.errors for x in loads))))
    vs_nginx = ratios(rps["gateway"], rps["nginx"])
    vs_direct = ratios(rps["gateway"], rps["direct"])
    vs_auth = ratios(rps["gateway"], rps["auth_request"])
    nginx_vs_direct = ratios(rps["nginx"], rps["direct"])
    bare_vs_nginx = ratios(rps["bare_aiohttp_proxy"], rps["nginx"])
    gateway_vs_bare = ratios(rps["gateway"], rps["bare_aiohttp_proxy"])
    out.notes += [
        f"gateway / nginx plain: {vs_nginx}",
        f"gateway / direct: {vs_direct}",
        f"gateway / nginx auth_request: {vs_auth}",
        f"nginx plain / direct: {nginx_vs_direct}",
        f"bare aiohttp proxy / nginx plain: {bare_vs_nginx}; gateway / bare aiohttp proxy: "
        f"{gateway_vs_bare}",
        f"CPU per request, edge only (the endpoint's own for direct), gateway ÷ nginx plain: "
        f"{ratios(cpu['gateway'], cpu['nginx'])}, gateway ÷ auth_request (nginx + verifier): "
        f"{ratios(cpu['gateway'], cpu['auth_request'])}, gateway ÷ bare aiohttp proxy: "
        f"{ratios(cpu['gateway'], cpu['bare_aiohttp_proxy'])}; lean proxy ÷ bare aiohttp "
        f"proxy: {ratios(cpu['lean_proxy'], cpu['bare_aiohttp_proxy'])}",
        f"wrk, 1 thread, {connections} connections, {seconds} s per run, {rounds} interleaved "
        f"rounds{' (quick)' if quick else ''}; ratios are per round, median (min–max)",
    ]
    errors = sum(x.errors for loads in measured.values() for x in loads)
    if errors:
        out.notes.append(f"{errors} non-2xx or socket errors: the figures are suspect")
    out.results += [
        Result("gateway_vs_nginx_rps", vs_nginx.median, 0.5),
        Result("gateway_vs_auth_request_rps", vs_auth.median, 2.0),
    ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_overhead")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", type=Path, default=None, metavar="FILE",
                        help="after the rounds, profile the gateway with py-spy into FILE")
    args = parser.parse_args()
    result = asyncio.run(run(args.quick, profile_to=args.profile))
    print(result.render())


if __name__ == "__main__":
    main()
