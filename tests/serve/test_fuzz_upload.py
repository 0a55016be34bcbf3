"""Property-based fuzzing of ``POST /search`` (hypothesis): whatever the bytes, the answer is 200, 400 or
415, never a 5xx, and no request raises the process's resident memory by more than a bound.

The inputs: images of any shape up to 2^24 px a side (the large ones as a real PNG header over a short
pixel stream, so they cost nothing to make: the server must refuse them from the header), in every Pillow
mode and allowed format, formats outside the allow-list, those bytes truncated or with bytes flipped, and
random bytes. Examples are derandomized (the same every run) and bounded in number.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import time
import zlib

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcip.data.limits import ImageLimits
from mcip.serve import create_app
from tests.data.image_samples import DISALLOWED_FORMATS, blank_png, saved_as

LIMITS = ImageLimits(max_pixels=4_000_000)  # 16 MB as Pillow RGB: the bound below has room for copies
MEMORY_BOUND = 256 * 2**20  # bytes of resident memory one request may add
REAL_PNG_BYTES = 64 * 2**20  # larger PNGs are a header over a short pixel stream (refused unread)
MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "I;16", "I", "F", "CMYK", "YCbCr"]
FORMATS = ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"]
STATM = "/proc/self/statm"

pytestmark = pytest.mark.skipif(not os.path.exists(STATM), reason="resident memory is read from /proc")


def resident_bytes() -> int:
    with open(STATM) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """The largest resident memory seen while the ``with`` block runs, sampled every millisecond."""

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = resident_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, resident_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())

    @property
    def increase(self) -> int:
        return self.peak - self.start


def header_png(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` over a short pixel stream (decoding would fail)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    idat = zlib.compress(b"\0" * 4096)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


sides = st.one_of(st.integers(1, 64), st.integers(1, 2**18))


@st.composite
def shaped_png(draw) -> bytes:
    """A blank PNG of any shape; half of them thin (1 to 8 px by up to 2^24 px)."""
    if draw(st.booleans()):
        short, long = draw(st.integers(1, 8)), draw(st.integers(1, 2**24))
        width, height = (short, long) if draw(st.booleans()) else (long, short)
    else:
        width, height = draw(sides), draw(sides)
    if width * height <= 2**25 and height * (1 + width // 8) <= REAL_PNG_BYTES:
        return blank_png(width, height)
    return header_png(width, height)


@st.composite
def small_image(draw) -> bytes:
    from PIL import Image

    mode, fmt = draw(st.sampled_from(MODES)), draw(st.sampled_from(FORMATS))
    size = (draw(st.integers(1, 300)), draw(st.integers(1, 300)))
    buf = io.BytesIO()
    try:
        Image.new(mode, size).save(buf, format=fmt)
    except (OSError, ValueError, KeyError):  # this format cannot store this mode
        return saved_as("PNG", size)
    return buf.getvalue()


@st.composite
def damaged(draw, inner) -> bytes:
    data = bytearray(draw(inner))
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))) :]
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


images = st.one_of(
    shaped_png(),
    small_image(),
    st.sampled_from(DISALLOWED_FORMATS).map(saved_as),
    damaged(st.one_of(shaped_png(), small_image())),
    st.binary(min_size=1, max_size=2048),
)


@pytest.fixture(scope="module")
def fuzz_client(search_index):
    with TestClient(create_app(search_index, image_limits=LIMITS), raise_server_exceptions=False) as client:
        client.post("/search", files={"image": ("w.png", saved_as("PNG"))})  # warm up the model and pools
        yield client


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=images)
def test_image_uploads_never_get_5xx_nor_unbounded_memory(fuzz_client, data):
    time.sleep(0)  # let the sampler of the previous example finish
    with PeakMemory() as memory:
        response = fuzz_client.post("/search", files={"image": ("q.png", data, "image/png")})
    assert response.status_code in (200, 400, 415), response.text[:500]
    if response.status_code != 200:
        assert isinstance(response.json()["detail"], str)
    assert memory.increase < MEMORY_BOUND, f"+{memory.increase / 2**20:.0f} MiB for {len(data)} bytes"
