"""Bytes a client library would refuse to send, sent over a socket, and the answer read
back as it came: for the requests an HTTP parser refuses, and foreign Host names."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

# Looks like the gateway's cookie; no answer may ever quote it.
SECRET_COOKIE = "authToken=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzZWNyZXQtcnVubmVyIn0.c2VjcmV0LXNpZw"
BANNERS = (b"aiohttp", b"python", b"nginx/")


@dataclass(frozen=True)
class RawResponse:
    raw: bytes

    @property
    def head(self) -> bytes:
        return self.raw.partition(b"\r\n\r\n")[0]

    @property
    def body(self) -> bytes:
        return self.raw.partition(b"\r\n\r\n")[2]

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    def headers(self, name: str) -> list[str]:
        wanted = name.lower().encode()
        values = []
        for line in self.head.split(b"\r\n")[1:]:
            field, _, value = line.partition(b":")
            if field.strip().lower() == wanted:
                values.append(value.strip().decode("latin-1"))
        return values

    def header(self, name: str) -> str | None:
        values = self.headers(name)
        assert len(values) <= 1, (name, values)
        return values[0] if values else None


async def exchange(port: int, data: bytes, *, host: str = "127.0.0.1",
                   ssl_context: ssl.SSLContext | None = None,
                   server_hostname: str | None = None, timeout: float = 10.0) -> RawResponse:
    """Send ``data``, half-close, and read until the server closes the connection."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        host, port, ssl=ssl_context,
        server_hostname=server_hostname if ssl_context else None), timeout)
    chunks: list[bytes] = []
    try:
        writer.write(data)
        await writer.drain()
        while chunk := await asyncio.wait_for(reader.read(65536), timeout):
            chunks.append(chunk)
        return RawResponse(b"".join(chunks))
    except (ConnectionResetError, ssl.SSLError):
        return RawResponse(b"".join(chunks))
    finally:
        writer.close()


def request(target: str = "/", *, host: str, lines: tuple[bytes, ...] = (),
            method: str = "GET") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n".encode()
    return head + b"".join(line + b"\r\n" for line in lines) + b"Connection: close\r\n\r\n"


def sent_lines(data: bytes) -> list[bytes]:
    """The lines of a request no answer may quote: all but the ones any answer may carry."""
    lines = data.split(b"\r\n")
    return [line for line in lines[1:]
            if line and not line.startswith((b"Host:", b"Connection:"))] + [lines[0]]


# Requests aiohttp's parser refuses, each carrying the cookie.
BAD_HEADER_LINES = {
    "space_before_colon": (f"Cookie : {SECRET_COOKIE}".encode(),),
    "control_character_in_value": (f"Cookie: {SECRET_COOKIE}\x01x".encode(),),
    "header_line_over_8_kb": (f"Cookie: {SECRET_COOKIE}; pad={'p' * 9000}".encode(),),
}
