"""Fetching and unpacking the lab's npm archives: ``npm pack NAME@VERSION``, checked and unpacked safely."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from mcip.data.lab_manifest import LabDataError

# Pinned package versions: the image packages ship 64 px PNGs + emoji.json, emojibase-data the CLDR labels.
DEFAULT_VERSIONS: dict[str, str] = {
    "emoji-datasource-google": "16.0.0",
    "emoji-datasource-twitter": "16.0.0",
    "emoji-datasource-facebook": "16.0.0",
    "emojibase-data": "17.0.0",
}
VENDOR_PREFIX = "emoji-datasource-"
CLDR_PACKAGE = "emojibase-data"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def npm_pack(name: str, version: str, dest: Path, npm: str = "npm") -> Path:
    """Download ``name@version`` with ``npm pack`` into ``dest/<name>-<version>.tgz`` (atomically)."""
    exe = shutil.which(npm)
    if exe is None:
        raise LabDataError(
            f"'{npm}' was not found: the lab data is installed from the npm registry with `npm pack`; "
            "install Node.js/npm (e.g. apt install npm) and run again."
        )
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".pack-") as tmp:
        cmd = [exe, "pack", f"{name}@{version}", "--pack-destination", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip()[-2000:]
            raise LabDataError(
                f"`npm pack {name}@{version}` failed (exit {proc.returncode}); npm said:\n{tail}\n"
                "Check that the npm registry is reachable (npm config get registry) and run again."
            )
        found = sorted(Path(tmp).glob("*.tgz"))
        if len(found) != 1:
            raise LabDataError(
                f"`npm pack {name}@{version}` left {len(found)} .tgz files in {tmp}; expected 1."
            )
        target = dest / f"{name}-{version}.tgz"
        os.replace(found[0], target)
    return target


def _corrupt(archive: Path, why: object) -> LabDataError:
    return LabDataError(
        f"{archive} is not a valid gzip tar archive ({why}): the download is corrupted. "
        f"Delete {archive.parent.parent} (or pass force=True / --force) and run again."
    )


def _safe_parts(name: str, archive: Path) -> tuple[str, ...]:
    """The member's path parts, or an error for absolute paths and ``..`` (path traversal)."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name or ":" in name:
        raise LabDataError(
            f"{archive} holds an unsafe path '{name}'; refusing to unpack it. Delete the file."
        )
    return path.parts


def safe_extract(archive: Path, dest: Path, keep: Callable[[str], bool]) -> int:
    """Unpack the regular files of ``archive`` whose name passes ``keep`` into ``dest``; returns the count.

    Links, devices and directories are never created from the archive; absolute paths and ``..``
    are refused. The files go to ``dest.partial`` first, renamed to ``dest`` once all are written, so an
    existing ``dest`` is always complete.
    """
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    count = 0
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = _safe_parts(member.name, archive)
                if not member.isfile() or not keep(member.name):
                    continue
                out = partial.joinpath(*parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                with src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                count += 1
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise _corrupt(archive, exc) from exc
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(partial, dest)
    return count


def check_archive(archive: Path) -> None:
    """Read the whole archive once (gzip CRC and tar headers); an error if it is not a valid gzip tar."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.isfile():
                    src = tar.extractfile(member)
                    with src:
                        while src.read(1 << 20):
                            pass
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise _corrupt(archive, exc) from exc
