"""One index, whatever spelling reaches it: a symlink to an index folder, or a path through ``..``, names the
same lock, the same staging folder and the same swap as the folder itself. Writes through a symlink land in
its target and the symlink stays a symlink (it used to be replaced by a real folder holding the new rows while
the target kept the old ones, and the next write failed with NotADirectoryError)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mcip.cli import main
from mcip.index import SearchIndex, add_to_index, build_index
from mcip.index.lock import IndexBusyError, holds_lock, index_lock, lock_path
from mcip.index.maintain import remove_from_index
from mcip.index.store import staging_dir
from tests.index.helpers import write_pngs

HOLDER = """
import sys, time
from mcip.index.lock import index_lock
with index_lock(sys.argv[1], command="test holder"):
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def linked(model_dir, tmp_path):
    """base.index (6 images), link.index -> base.index, and two folders of new images."""
    write_pngs(tmp_path / "base", [f"{i}.png" for i in range(6)])
    write_pngs(tmp_path / "new", [f"n{i}.png" for i in range(3)], seed=1)
    write_pngs(tmp_path / "newer", [f"m{i}.png" for i in range(2)], seed=2)
    build_index(model_dir, tmp_path / "base", tmp_path / "base.index", progress=False)
    os.symlink("base.index", tmp_path / "link.index")
    return tmp_path


def _ids(index_dir) -> set[str]:
    with SearchIndex.open(index_dir, load_model=False) as index:
        return set(index.ids)


def test_adds_through_a_symlink_land_in_its_target_and_keep_the_link(linked):
    link, base = linked / "link.index", linked / "base.index"
    assert add_to_index(link, linked / "new", progress=False)["count"] == 9
    assert link.is_symlink() and os.readlink(link) == "base.index"
    assert _ids(base) == {f"{i}.png" for i in range(6)} | {f"n{i}.png" for i in range(3)}
    assert add_to_index(link, linked / "newer", progress=False)["count"] == 11  # the second one too
    assert link.is_symlink() and len(_ids(base)) == 11
    assert remove_from_index(link, ["0.png"])["count"] == 10
    assert link.is_symlink() and len(_ids(base)) == 10
    assert sorted(p.name for p in linked.iterdir() if p.name.startswith(".link")) == []  # nothing by its name


def test_cli_add_and_build_through_a_symlink(linked, model_dir, capsys):
    link = linked / "link.index"
    quiet = ["--workers", "0", "--quiet"]
    assert main(["index", "add", "--index", str(link), "--images", str(linked / "new"), *quiet]) == 0
    build = ["index", "build", "--model", str(model_dir), "--images", str(linked / "newer")]
    assert main([*build, "--out", str(link), *quiet]) == 0  # a new build replaces the target
    assert "Traceback" not in capsys.readouterr().err
    assert link.is_symlink() and _ids(linked / "base.index") == {"m0.png", "m1.png"}


def test_a_symlink_and_a_dotdot_spelling_share_the_folder_s_lock_and_staging(linked):
    base = linked / "base.index"
    spellings = [linked / "link.index", linked / "base" / ".." / "base.index"]
    for other in spellings:
        assert lock_path(other) == lock_path(base)
        assert staging_dir(other) == staging_dir(base)
    with index_lock(base):
        for other in spellings:
            assert holds_lock(other)
            with index_lock(other, wait=1.0):  # re-entry: never waits on its own lock
                pass


def test_a_writer_through_the_link_is_refused_while_another_process_writes_the_folder(linked):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(linked / "base.index")], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(IndexBusyError, match=f"pid {proc.pid}"):
            add_to_index(linked / "link.index", linked / "new", progress=False)
        with pytest.raises(IndexBusyError, match=f"pid {proc.pid}"):
            add_to_index(linked / "base" / ".." / "base.index", linked / "new", progress=False)
    finally:
        proc.kill()
        proc.wait()
    assert len(_ids(linked / "base.index")) == 6


def test_index_folders_follow_the_umask(model_dir, tmp_path):
    """Under umask 022 the index folder and its files are readable by others (a server running as another
    user can open it); the folder used to be 0700 whatever the umask."""
    import stat

    write_pngs(tmp_path / "img", ["0.png", "1.png"])
    old = os.umask(0o022)
    try:
        build_index(model_dir, tmp_path / "img", tmp_path / "index", progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "index").stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "index").iterdir()} == {0o644}
