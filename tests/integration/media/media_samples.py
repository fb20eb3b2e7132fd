"""Real files for the media tests, made here: Pillow images and hand-built video headers."""

from __future__ import annotations

import io
import struct

from PIL import Image


def image(fmt: str, size: tuple[int, int] = (7, 5), **save: object) -> bytes:
    buffer = io.BytesIO()
    mode = "P" if fmt == "GIF" else "RGB"
    Image.new(mode, size, color=3 if mode == "P" else (200, 30, 60)).save(buffer, fmt, **save)
    return buffer.getvalue()


def jpeg(size: tuple[int, int] = (7, 5), **save: object) -> bytes:
    return image("JPEG", size, **save)


def png(size: tuple[int, int] = (7, 5)) -> bytes:
    return image("PNG", size)


def gif(size: tuple[int, int] = (7, 5)) -> bytes:
    return image("GIF", size)


def webp(size: tuple[int, int] = (7, 5)) -> bytes:
    return image("WEBP", size)


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def mp4() -> bytes:
    """ftyp (isom, compatible mp41), an empty moov with an mvhd, and an mdat."""
    ftyp = box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isom" + b"mp41")
    mvhd = box(b"mvhd", bytes(4) + bytes(8) + struct.pack(">II", 1000, 0) + bytes(80))
    return ftyp + box(b"moov", mvhd) + box(b"mdat", bytes(range(256)) * 4)


def mov() -> bytes:
    """A QuickTime file: ftyp with the 'qt  ' brand, then a wide and an mdat atom."""
    ftyp = box(b"ftyp", b"qt  " + struct.pack(">I", 0x200) + b"qt  ")
    return ftyp + box(b"wide", b"") + box(b"mdat", bytes(range(256)) * 4)


def avi() -> bytes:
    """RIFF 'AVI ' with an hdrl list holding a zeroed avih, and an empty movi list."""
    avih = b"avih" + struct.pack("<I", 56) + bytes(56)
    hdrl = b"LIST" + struct.pack("<I", 4 + len(avih)) + b"hdrl" + avih
    movi = b"LIST" + struct.pack("<I", 4 + 512) + b"movi" + bytes(512)
    body = b"AVI " + hdrl + movi
    return b"RIFF" + struct.pack("<I", len(body)) + body


ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(8) + b"\x02\x00\x3e\x00" + bytes(200)
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
       b'onload="alert(1)"><rect width="1" height="1"/></svg>')


def jpeg_then_html() -> bytes:
    """The classic polyglot: a JPEG start (SOI and APP0) directly followed by a page."""
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + HTML


def jpeg_with_html_comment() -> bytes:
    """A JPEG that decodes whole, with a page hidden in a COM segment after SOI."""
    real = jpeg()
    comment = HTML
    segment = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
    return real[:2] + segment + real[2:]


# --- multipart bodies, built by hand so that hostile shapes can be sent -------------

BOUNDARY = "tempo-test-boundary-7d1c"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str, data: bytes, *, filename: str | None = None,
         raw_disposition: bytes | None = None, content_type: str | None = None) -> bytes:
    if raw_disposition is None:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        raw_disposition = disposition.encode()
    head = b"Content-Disposition: " + raw_disposition + b"\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n".encode()
    return f"--{BOUNDARY}\r\n".encode() + head + b"\r\n" + data + b"\r\n"


def file_part(filename: str, data: bytes, content_type: str = "application/octet-stream"
              ) -> bytes:
    return part("file", data, filename=filename, content_type=content_type)


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
