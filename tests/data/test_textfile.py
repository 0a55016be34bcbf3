"""``mcip.data.textfile``: byte-order marks, explicit encodings, and where a file stops decoding."""

from __future__ import annotations

import codecs

import pytest

from mcip.data.captions import read_caption_sidecar
from mcip.data.manifest import read_manifest_rows
from mcip.data.textfile import _SCAN_CHUNK, check_encoding, detect_encoding, open_text
from mcip.errors import ConfigError, InputError

TEXT = "path,label\na.png,café\nb.png,naïve\n"


def _read(path, encoding=None) -> str:
    with open_text(path, encoding, newline="") as f:
        return f.read()


@pytest.mark.parametrize(
    ("bom", "codec"),
    [
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
        (codecs.BOM_UTF32_LE, "utf-32-le"),
        (codecs.BOM_UTF32_BE, "utf-32-be"),
    ],
)
def test_a_byte_order_mark_picks_the_codec_and_is_not_part_of_the_text(tmp_path, bom, codec):
    path = tmp_path / "m.csv"
    path.write_bytes(bom + TEXT.encode(codec))
    assert detect_encoding(path) == (codec, len(bom))
    assert _read(path) == TEXT  # no U+FEFF glued to the first column name
    assert read_manifest_rows(path)[1] == {"path": "b.png", "label": "naïve"}


def test_plain_utf8_and_explicit_encodings(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(TEXT.encode("utf-8"))
    assert detect_encoding(path) == ("utf-8", 0) and _read(path) == TEXT
    path.write_bytes(TEXT.encode("latin-1"))
    assert _read(path, "latin-1") == TEXT and _read(path, "ISO-8859-1") == TEXT
    path.write_bytes(codecs.BOM_UTF8 + TEXT.encode("utf-8"))
    assert _read(path, "utf-8") == TEXT  # an explicit utf-8 still drops Excel's mark
    path.write_bytes(TEXT.encode("utf-16-le"))
    assert _read(path, "utf-16-le") == TEXT


def test_latin1_fails_with_the_byte_offset_line_and_fix(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(TEXT.encode("latin-1"))
    offset = TEXT.encode("latin-1").index(b"\xe9")
    with pytest.raises(InputError) as info:
        _read(path)
    message = str(info.value)
    assert f"{path}: not valid utf-8 text at byte {offset} (line 2: e9" in message
    assert "iconv" in message and "--encoding latin-1" in message and "data.encoding=" in message


def test_the_offset_is_exact_past_the_first_chunk_and_with_a_bom(tmp_path):
    path = tmp_path / "big.jsonl"
    head = codecs.BOM_UTF8 + b'{"a": 1}\n' * (_SCAN_CHUNK // 9 + 7) + "é".encode()
    path.write_bytes(head + b"\xff\n")
    with pytest.raises(InputError, match=rf"at byte {len(head)} \(line {_SCAN_CHUNK // 9 + 8}: ff"):
        _read(path)


def test_a_truncated_multibyte_character_at_the_end_is_found(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"ok\n" + "é".encode()[:1])
    with pytest.raises(InputError, match=r"at byte 3 \(line 2: c3, unexpected end of data"):
        _read(path)


def test_utf16_without_a_mark_is_named(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(TEXT.encode("utf-16-le"))
    with pytest.raises(InputError, match=r"byte 1 is a NUL byte.*UTF-16 saved without a byte-order mark"):
        _read(path)


def test_an_explicit_encoding_that_does_not_fit_says_so(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(b"path,label\na.png,\x81\n")  # 0x81 is undefined in cp1252
    with pytest.raises(
        InputError, match=r"not valid cp1252 text at byte 17 .* pass the encoding it was saved in"
    ):
        _read(path, "cp1252")


def test_unknown_encoding_names_are_refused():
    assert check_encoding(None) is None and check_encoding("Latin1") == "iso8859-1"
    with pytest.raises(ConfigError, match="Unknown text encoding 'klingon'; use a Python codec name"):
        check_encoding("klingon")


def test_caption_sidecars_go_through_the_same_reader(tmp_path):
    path = tmp_path / "caps.jsonl"
    line = '{"id": "a", "captions": ["un café"]}\n'.encode("latin-1")
    path.write_bytes(line)
    offset = line.index("é".encode("latin-1"))
    with pytest.raises(InputError, match=rf"caps.jsonl: not valid utf-8 text at byte {offset} \(line 1"):
        read_caption_sidecar(path)
    assert read_caption_sidecar(path, "latin-1") == {"a": ["un café"]}
    path.write_bytes(codecs.BOM_UTF16_LE + '{"id": "a", "captions": ["un café"]}\n'.encode("utf-16-le"))
    assert read_caption_sidecar(path) == {"a": ["un café"]}
