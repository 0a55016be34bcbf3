"""Opening the text files users give (manifests, caption sidecars): one place for encodings.

Without an explicit encoding a file is read as UTF-8, or as what its byte-order mark says (UTF-8 with
BOM, as Excel writes it; UTF-16 / UTF-32, little or big endian). A file that does not decode, or that
holds NUL bytes without a BOM (UTF-16 saved without one), fails with an :class:`~mcip.errors.InputError`
naming the file, the line and byte offset of the first bad byte and the fix (re-save as UTF-8, or pass
the encoding: ``--encoding`` on the commands, ``data.encoding`` in training configs).
"""

from __future__ import annotations

import codecs
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from mcip.errors import ConfigError, InputError

# Longest first: the UTF-32 LE mark starts with the UTF-16 LE one.
BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_SNIFF_BYTES = 4096
_SCAN_CHUNK = 1 << 20


def check_encoding(encoding: str | None) -> str | None:
    """The canonical codec name of ``encoding`` (None stays None: detect); unknown names fail."""
    if encoding is None:
        return None
    try:
        return codecs.lookup(str(encoding)).name
    except LookupError:
        raise ConfigError(
            f"Unknown text encoding {encoding!r}; use a Python codec name such as utf-8, latin-1, cp1252 "
            "or utf-16."
        ) from None


def detect_encoding(path: str | os.PathLike, encoding: str | None = None) -> tuple[str, int]:
    """``(codec, bytes to skip)`` for reading ``path``: the byte-order mark's codec (the mark skipped), else
    ``encoding``, else UTF-8. A UTF-8 mark is skipped under an explicit ``utf-8`` too."""
    encoding = check_encoding(encoding)
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    for bom, codec in BOMS:
        if head.startswith(bom) and (encoding is None or codecs.lookup(codec).name == encoding):
            return codec, len(bom)
    if encoding is not None:
        return encoding, 0
    if b"\x00" in head:
        nul = head.index(b"\x00")
        raise InputError(
            f"{path}: byte {nul} is a NUL byte, so this is not a UTF-8 text file; it looks like "
            "UTF-16 saved without a byte-order mark. Save it as UTF-8, or pass the encoding (e.g. --encoding "
            "utf-16-le; in training configs data.encoding=utf-16-le)."
        )
    return "utf-8", 0


def _first_bad_byte(path: Path, codec: str, skip: int) -> tuple[int, int, bytes, str]:
    """``(byte offset, line number, bad bytes, reason)`` of the first byte ``codec`` cannot decode."""
    decoder = codecs.getincrementaldecoder(codec)()
    offset, lines = skip, 1
    with open(path, "rb") as f:
        f.seek(skip)
        while True:
            chunk = f.read(_SCAN_CHUNK)
            pending = len(decoder.getstate()[0])
            try:
                lines += decoder.decode(chunk, final=not chunk).count("\n")
            except UnicodeDecodeError as exc:  # exc.object = the pending bytes + this chunk
                before = codecs.decode(exc.object[: exc.start], codec, "replace")
                bad = exc.object[exc.start : exc.end]
                return offset - pending + exc.start, lines + before.count("\n"), bad, exc.reason
            if not chunk:
                return offset, lines, b"", "unknown"
            offset += len(chunk)


def decode_error(path: str | os.PathLike, codec: str, skip: int, explicit: bool) -> InputError:
    """The error for a file that ``codec`` cannot decode: where, and how to fix it."""
    at, line, bad, reason = _first_bad_byte(Path(path), codec, skip)
    how = (
        "pass the encoding it was saved in instead"
        if explicit
        else "save it as UTF-8 (e.g. iconv -f latin1 -t utf-8 IN > OUT), or pass the encoding it was saved in"
    )
    return InputError(
        f"{path}: not valid {codec} text at byte {at} (line {line}: {bad.hex(' ')}, {reason}); {how}: "
        "--encoding NAME on the command (e.g. --encoding latin-1 or cp1252), data.encoding=NAME in training "
        "configs."
    )


@contextmanager
def open_text(
    path: str | os.PathLike, encoding: str | None = None, newline: str | None = None
) -> Iterator[TextIO]:
    """Open ``path`` for reading text (encoding: module docstring); a decoding error anywhere in the
    ``with`` block becomes an :class:`InputError` with the byte offset and the fix.

    Args:
        encoding: a Python codec name; None detects (BOM, else UTF-8).
        newline: as for :func:`open` (``""`` for the csv module).
    """
    codec, skip = detect_encoding(path, encoding)
    raw = open(path, "rb")  # noqa: SIM115 - closed with the wrapper below
    raw.seek(skip)
    text = io.TextIOWrapper(raw, encoding=codec, newline=newline)
    try:
        yield text
    except UnicodeDecodeError:
        raise decode_error(path, codec, skip, encoding is not None) from None
    finally:
        text.close()
