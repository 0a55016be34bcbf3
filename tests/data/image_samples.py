"""Hostile but tiny image files: extreme shapes, decompression bombs, formats outside the allow-list."""

from __future__ import annotations

import functools
import io
import struct
import zlib


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


@functools.lru_cache(maxsize=16)
def blank_png(width: int, height: int) -> bytes:
    """A real, decodable 1-bit greyscale PNG (Pillow mode "1") of ``width`` x ``height`` px, written with
    zlib so that even 1 x 16,000,000 px takes a fraction of a second (and about 31 KB)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + the packed bits
    per_block = max(1, 2**20 // len(row))
    z = zlib.compressobj(9)
    parts = [z.compress(row * per_block) for _ in range(height // per_block)]
    parts += [z.compress(row * (height % per_block)), z.flush()]
    idat = b"".join(parts)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def saved_as(format: str, size: tuple[int, int] = (12, 8)) -> bytes:
    """A small red image saved by Pillow in ``format`` (e.g. "EPS", "PPM", "TGA", "ICO", "JPEG")."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format=format)
    return buf.getvalue()


THIN = {"1 x 20,000": (1, 20_000), "1 x 16,000,000": (1, 16_000_000), "16,000,000 x 1": (16_000_000, 1)}
# Pillow warns above 89,478,485 px (DecompressionBombWarning) and refuses above twice that.
BOMBS = {"warned": (10_000, 9_000), "refused by Pillow": (20_000, 10_000)}
DISALLOWED_FORMATS = ("EPS", "PPM", "TGA", "ICO", "PCX", "SGI")
