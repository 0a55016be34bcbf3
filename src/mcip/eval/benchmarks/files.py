"""Listing a dataset's files: sorted, hidden files skipped, nothing decoded; missing files fail with the
download instructions of the dataset they belong to."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from mcip.data.images import IMAGE_EXTENSIONS
from mcip.errors import InputError
from mcip.eval.benchmarks.base import Images, dataset_missing


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def list_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files in ``folder`` (and its sub-folders when ``recursive``), sorted by path."""
    if not recursive:
        with os.scandir(folder) as entries:
            return sorted(Path(e.path) for e in entries if is_image(e.name) and e.is_file())
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(Path(parent, f) for f in files if is_image(f))
    return sorted(found)


def sub_folders(folder: Path) -> list[str]:
    """Names of the visible sub-folders of ``folder``, sorted."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def require(path: Path, download: str, folder: bool = True) -> None:
    """Fail with the download instructions unless ``path`` is an existing folder (or file)."""
    exists = path.is_dir() if folder else path.is_file()
    if not exists:
        raise dataset_missing(path, download, "folder not found" if folder else "file not found")


def require_class_folders(path: Path, download: str) -> None:
    """Like :func:`require` for a folder of class sub-folders; a flat folder of images fails too."""
    require(path, download)
    if not sub_folders(path):
        raise dataset_missing(path, download, "has no class sub-folders (expected CLASS/image files)")


def require_files(paths: Sequence[Path], download: str, listed_in: Path) -> None:
    """Fail if any file listed in ``listed_in`` is absent (names the first and the count)."""
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise dataset_missing(
            absent[0],
            download,
            f"not found ({len(absent)} of the {len(paths)} images listed in {listed_in} are missing)",
        )


def class_folder_images(folder: Path, download: str) -> tuple[list[Path], list[str]]:
    """Images under ``folder/CLASS/...`` (any depth) and each one's class (the first sub-folder), sorted."""
    require(folder, download)
    paths, classes = [], []
    loose = list_images(folder, recursive=False)
    if loose:
        raise InputError(
            f"{len(loose)} image(s) directly in {folder} (e.g. {loose[0].name}) have no class: move each "
            "image into a sub-folder named after its class (FOLDER/CLASS/image.jpg)."
        )
    for name in sub_folders(folder):
        found = list_images(folder / name)
        paths.extend(found)
        classes.extend([name] * len(found))
    if not paths:
        raise dataset_missing(folder, download, "contains no images")
    return paths, classes


def labelled(paths: Iterable[Path], labels: Iterable[int]) -> Images:
    """:class:`Images` with int64 labels."""
    return Images(paths=tuple(paths), labels=np.asarray(list(labels), dtype=np.int64))


def class_ids(names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Sorted distinct class names and each item's index into them (int64)."""
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    return classes, np.asarray([index[n] for n in names], dtype=np.int64)


def read_lines(path: Path) -> list[str]:
    """Non-empty lines of a text file, stripped."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]
