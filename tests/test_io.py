"""mcip._io: atomic writes of files and folders (content, no leftovers, the target untouched on error)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from mcip import _io


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (lambda p: _io.atomic_write_bytes(p, b"\x00\x01 bytes"), b"\x00\x01 bytes"),
        (lambda p: _io.atomic_write_text(p, "h\u00e9llo\nline"), "h\u00e9llo\nline".encode()),
        (lambda p: _io.atomic_write_text(p, "h\u00e9", encoding="latin-1"), b"h\xe9"),
        (lambda p: _io.atomic_write_json(p, {"a": [1, "\u00e9"]}), b'{"a": [1, "\\u00e9"]}'),
        (
            lambda p: _io.atomic_write_json(p, {"a": "\u00e9"}, indent=2, ensure_ascii=False),
            json.dumps({"a": "\u00e9"}, indent=2, ensure_ascii=False).encode(),
        ),
    ],
)
def test_file_written_and_nothing_left_behind(tmp_path, write, expected):
    target = tmp_path / "out.dat"
    target.write_bytes(b"old version")
    assert write(target) == target
    assert target.read_bytes() == expected
    assert _entries(tmp_path) == ["out.dat"]


def test_atomic_open_streams_and_follows_the_umask(tmp_path):
    target = tmp_path / "stream.bin"
    with _io.atomic_open(target) as handle:
        for i in range(3):
            handle.write(bytes([i]) * 4)
        assert not target.exists()  # nothing at the target until the block ends
    assert target.read_bytes() == b"\x00" * 4 + b"\x01" * 4 + b"\x02" * 4
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"")
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_exception_mid_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "state.json"
    target.write_text('{"step": 1}')
    with pytest.raises(RuntimeError, match="killed"), _io.atomic_open(target, "w") as handle:
        handle.write('{"step": 2, "half')
        raise RuntimeError("killed")
    assert target.read_text() == '{"step": 1}'
    assert _entries(tmp_path) == ["state.json"]


def test_exception_when_the_target_did_not_exist(tmp_path):
    with pytest.raises(KeyboardInterrupt), _io.atomic_open(tmp_path / "new.bin") as handle:
        handle.write(b"x")
        raise KeyboardInterrupt
    assert _entries(tmp_path) == []


def test_unserialisable_json_writes_nothing(tmp_path):
    with pytest.raises(TypeError):
        _io.atomic_write_json(tmp_path / "x.json", {"a": object()})
    assert _entries(tmp_path) == []


def test_file_and_folder_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    _io.atomic_write_bytes(tmp_path / "f", b"data")
    assert synced == [False, True]  # the file, then its folder (the rename)


def test_append_or_read_modes_refused(tmp_path):
    with pytest.raises(ValueError, match="mode"), _io.atomic_open(tmp_path / "f", "a"):
        pass


def test_missing_parent_fails_like_open(tmp_path):
    with pytest.raises(FileNotFoundError):
        _io.atomic_write_text(tmp_path / "no" / "such" / "f.txt", "x")


def test_atomic_dir_creates_a_folder(tmp_path):
    target = tmp_path / "model"
    with _io.atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".model.") and not target.exists()
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.bin").write_bytes(b"w")
        (tmp / "meta.json").write_text("{}")
    assert (target / "sub" / "w.bin").read_bytes() == b"w" and (target / "meta.json").read_text() == "{}"
    assert _entries(tmp_path) == ["model"]


def test_atomic_dir_replaces_the_whole_folder(tmp_path):
    target = tmp_path / "index"
    target.mkdir()
    (target / "stale.bin").write_bytes(b"old")
    (target / "keep.txt").write_text("v1")
    with _io.atomic_dir(target) as tmp:
        (tmp / "keep.txt").write_text("v2")
        assert (target / "keep.txt").read_text() == "v1"  # readers see the old version until the swap
    assert _entries(target) == ["keep.txt"] and (target / "keep.txt").read_text() == "v2"
    assert _entries(tmp_path) == ["index"]  # neither the temporary nor the .index.old folder is left


def test_atomic_dir_exception_keeps_the_old_folder(tmp_path):
    target = tmp_path / "index"
    target.mkdir()
    (target / "a.txt").write_text("v1")
    with pytest.raises(OSError, match="disk full"), _io.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("v2, half")
        raise OSError("disk full")
    assert _entries(target) == ["a.txt"] and (target / "a.txt").read_text() == "v1"
    assert _entries(tmp_path) == ["index"]


def test_replace_dir_keeps_the_previous_version_at_old_until_the_swap(tmp_path, monkeypatch):
    src, dst, old = tmp_path / "new", tmp_path / "cur", tmp_path / ".cur.old"
    src.mkdir()
    (src / "v").write_text("2")
    dst.mkdir()
    (dst / "v").write_text("1")
    renames = []
    real = os.replace

    def spy(a, b):
        renames.append((os.path.basename(a), os.path.basename(b)))
        real(a, b)

    monkeypatch.setattr(os, "replace", spy)
    _io.replace_dir(src, dst, old)
    assert renames == [("cur", ".cur.old"), ("new", "cur")]
    assert (dst / "v").read_text() == "2" and not old.exists() and not src.exists()


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_dir_folders_follow_the_umask(tmp_path, umask):
    """Like ``mkdir``: a folder made under umask 022 is readable by others (a server running as another
    user can read an index); it used to be 0700 whatever the umask."""
    old = os.umask(umask)
    try:
        with _io.atomic_dir(tmp_path / "out") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o777 & ~umask


def test_a_symlink_is_never_replaced_by_a_folder(tmp_path):
    """``link -> real``: the swap replaces the folder the link points to; the link stays a link (twice, so
    that nothing the first swap left, such as a ``.link.old`` symlink, breaks the second)."""
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    (real / "v").write_text("1")
    os.symlink("real", link)
    for version in ("2", "3"):
        src = tmp_path / f"new{version}"
        src.mkdir()
        (src / "v").write_text(version)
        _io.replace_dir(src, link)
        assert link.is_symlink() and os.readlink(link) == "real" and (real / "v").read_text() == version
    with _io.atomic_dir(link) as tmp:
        (tmp / "v").write_text("4")
    assert link.is_symlink() and (real / "v").read_text() == "4"
    assert _entries(tmp_path) == ["link", "real"]


def test_a_file_or_symlink_left_at_old_does_not_stop_the_swap(tmp_path):
    src, dst, old = tmp_path / "new", tmp_path / "cur", tmp_path / ".cur.old"
    for folder, version in ((src, "2"), (dst, "1")):
        folder.mkdir()
        (folder / "v").write_text(version)
    os.symlink("cur", old)  # what an earlier version left when it swapped a symlink away
    _io.replace_dir(src, dst, old)
    assert (dst / "v").read_text() == "2" and not os.path.lexists(old)


def test_unknown_encoding_leaves_nothing(tmp_path):
    with pytest.raises(LookupError):
        _io.atomic_write_text(tmp_path / "f.txt", "x", encoding="no-such-codec")
    assert _entries(tmp_path) == []
