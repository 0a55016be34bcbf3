"""``mcip lab prepare``: install the offline emoji benchmark from npm and write its manifest.

Layout under ``root``::

    npm/<name>-<version>.tgz              the archives from ``npm pack`` (sha256 recorded in lab.json)
    npm/<name>-<version>/package/...      the files used: emoji.json, img/<vendor>/64/*.png, en/data.json
    images/<vendor>/<unified>.png         each vendor PNG composited onto white, RGB
    manifest.jsonl                        one line per image (fields below)
    lab.json                              versions, archive hashes, counts, skipped images

Manifest line: ``{"path", "label", "id", "captions", "vendor", "base", "category", "subcategory",
"split"}``; ``label`` is the unified code of the exact variant (skin tones are distinct classes), ``id``
is ``<vendor>/<unified>``. A class is kept only when at least two vendors draw it (instance retrieval
needs another vendor's drawing of the same emoji as the relevant item). Every step is skipped when
already done, so a second call returns quickly; ``force=True`` starts over.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from mcip._io import atomic_open, atomic_write_text
from mcip.data.lab_manifest import MANIFEST_NAME, SPLITS, read_lab_manifest
from mcip.data.records import ImageRecord
from mcip.errors import ConfigError
from mcip.lab.emoji import EmojiClass, build_classes, load_cldr, normalize_code
from mcip.lab.fetch import (
    CLDR_PACKAGE,
    DEFAULT_VERSIONS,
    VENDOR_PREFIX,
    LabDataError,
    check_archive,
    npm_pack,
    safe_extract,
    sha256_file,
)
from mcip.lab.images import composite_all
from mcip.lab.split import assign_splits

SEED = 0
MIN_VENDORS = 2


@dataclass
class LabData:
    """What :func:`prepare_lab` produced (also stored in ``root/lab.json``)."""

    root: Path
    manifest: Path
    counts: dict[str, int]  # split -> images
    classes: dict[str, int]  # split -> classes
    vendors: dict[str, int]  # vendor -> images
    skipped: list[str] = field(default_factory=list)  # unreadable source images

    def __str__(self) -> str:
        split_text = ", ".join(
            f"{s} {self.counts.get(s, 0)} images / {self.classes.get(s, 0)} classes" for s in SPLITS
        )
        vendor_text = ", ".join(f"{v} {n}" for v, n in self.vendors.items())
        return (
            f"Lab data in {self.root}: {sum(self.counts.values())} images of {sum(self.classes.values())} "
            f"classes ({split_text}); per vendor: {vendor_text}; skipped {len(self.skipped)} unreadable "
            f"image(s). Manifest: {self.manifest}"
        )


def _write_json(path: Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _read_state(root: Path) -> dict:
    path = root / "lab.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LabDataError(f"{path} does not parse ({exc}); delete {root} or pass force=True.") from exc


def _clean(root: Path) -> None:
    """Remove what prepare_lab wrote (never anything else in ``root``)."""
    for name in ("npm", "images"):
        shutil.rmtree(root / name, ignore_errors=True)
    for name in ("manifest.jsonl", "lab.json"):
        (root / name).unlink(missing_ok=True)


def _fetch(root: Path, versions: dict[str, str], npm: str, state: dict) -> None:
    """Make sure every archive is in ``root/npm`` with the recorded sha256 (recording it the first time)."""
    hashes = state.setdefault("archives", {})
    for name, version in versions.items():
        key, archive = f"{name}@{version}", root / "npm" / f"{name}-{version}.tgz"
        if not archive.is_file():
            if state.get("complete"):
                continue  # data already prepared; the archive was removed to save space
            archive = npm_pack(name, version, root / "npm", npm=npm)
        digest = sha256_file(archive)
        recorded = hashes.get(key)
        if recorded is None:
            check_archive(archive)
            hashes[key] = digest
            _write_json(root / "lab.json", state)
        elif recorded != digest:
            raise LabDataError(
                f"{archive} has sha256 {digest}, but {key} was recorded as {recorded} in {root / 'lab.json'}: "
                f"the download is corrupted. Delete {root} (or pass force=True / --force) and run again."
            )


def _unpack(root: Path, name: str, version: str) -> Path:
    """Unpack the files the lab uses from one archive (once); returns its ``package`` folder."""
    dest = root / "npm" / f"{name}-{version}"
    if name == CLDR_PACKAGE:
        wanted = ("package/en/data.json",)

        def keep(member: str) -> bool:
            return member in wanted
    else:
        vendor = name.removeprefix(VENDOR_PREFIX)
        wanted = ("package/emoji.json",)

        def keep(member: str) -> bool:
            return member in wanted or (
                member.startswith(f"package/img/{vendor}/64/") and member.endswith(".png")
            )

    if not dest.is_dir():
        safe_extract(root / "npm" / f"{name}-{version}.tgz", dest, keep)
    for member in wanted:
        if not (dest / member).is_file():
            raise LabDataError(f"{name}@{version} has no {member}: is this the right package version?")
    return dest / "package"


def _manifest_rows(classes: list[EmojiClass], done: dict[str, list[str]]) -> list[dict]:
    kept = [c for c in classes if len(done.get(c.label, [])) >= MIN_VENDORS]
    split_of = assign_splits({c.base: c.subcategory for c in kept}, seed=SEED)
    return [
        {
            "path": f"images/{vendor}/{c.label}.png",
            "label": c.label,
            "id": f"{vendor}/{c.label}",
            "captions": list(c.captions),
            "vendor": vendor,
            "base": c.base,
            "category": c.category,
            "subcategory": c.subcategory,
            "split": split_of[c.base],
        }
        for c in kept
        for vendor in sorted(done[c.label])
    ]


def _summarise(rows: list[dict]) -> dict:
    counts = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
    classes = {s: len({r["label"] for r in rows if r["split"] == s}) for s in SPLITS}
    vendors: dict[str, int] = {}
    for r in rows:
        vendors[r["vendor"]] = vendors.get(r["vendor"], 0) + 1
    return {"counts": counts, "classes": classes, "vendors": dict(sorted(vendors.items()))}


def _lab_data(root: Path, state: dict) -> LabData:
    return LabData(
        root=root,
        manifest=root / "manifest.jsonl",
        counts=dict(state["counts"]),
        classes=dict(state["classes"]),
        vendors=dict(state["vendors"]),
        skipped=list(state.get("skipped", [])),
    )


def _check_versions(versions: dict[str, str] | None, state: dict, root: Path) -> dict[str, str]:
    unknown = sorted(set(versions or {}) - set(DEFAULT_VERSIONS))
    if unknown:
        raise ConfigError(f"Unknown lab package(s) {unknown}; the lab uses {', '.join(DEFAULT_VERSIONS)}.")
    wanted = {**DEFAULT_VERSIONS, **(versions or {})}
    if state.get("versions") not in (None, wanted):
        raise LabDataError(
            f"{root} holds lab data for {state['versions']}, not {wanted}: use another root, "
            "or pass force=True / --force to replace it."
        )
    return wanted


def prepare_lab(
    root: Path,
    versions: dict[str, str] | None = None,
    npm: str = "npm",
    force: bool = False,
    progress: bool = True,
) -> LabData:
    """Fetch, check and unpack the emoji packages, composite the images onto white, write the manifest.

    Args:
        root: folder for everything (layout in the module docstring); created if needed.
        versions: package -> version overrides of :data:`DEFAULT_VERSIONS`.
        npm: the npm executable (name on PATH or a path).
        force: delete what an earlier run wrote under ``root`` and start over.
        progress: show a progress bar and print the summary.
    """
    root = Path(root)
    if force:
        _clean(root)
    root.mkdir(parents=True, exist_ok=True)
    state = _read_state(root)
    versions = _check_versions(versions, state, root)
    state["versions"] = versions
    _fetch(root, versions, npm, state)
    if state.get("complete") and (root / "manifest.jsonl").is_file():
        data = _lab_data(root, state)
    else:
        data = _build(root, versions, state, progress)
    if progress:
        print(data)
    return data


def _build(root: Path, versions: dict[str, str], state: dict, progress: bool) -> LabData:
    packages = {
        n.removeprefix(VENDOR_PREFIX): _unpack(root, n, v) for n, v in versions.items() if n != CLDR_PACKAGE
    }
    cldr = load_cldr(_unpack(root, CLDR_PACKAGE, versions[CLDR_PACKAGE]) / "en" / "data.json")
    classes = build_classes(packages, cldr)
    done, skipped = composite_all(root / "images", classes, progress)
    rows = _manifest_rows(classes, done)
    with atomic_open(root / MANIFEST_NAME, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    kept = {r["label"] for r in rows}
    state.update(_summarise(rows))
    state.update(
        seed=SEED,
        min_vendors=MIN_VENDORS,
        dropped_classes=len([c for c in classes if c.label not in kept]),
        missing_cldr_label=len({r["label"] for r in rows if not _has_label(r, cldr)}),
        skipped=skipped,
        complete=True,
    )
    _write_json(root / "lab.json", state)
    return _lab_data(root, state)


def _has_label(row: dict, cldr: dict[str, dict]) -> bool:
    return bool((cldr.get(normalize_code(row["label"])) or {}).get("label"))


def lab_records(root: Path, split: str) -> list[ImageRecord]:
    """The split's images as :class:`ImageRecord` (id ``<vendor>/<unified>``, label, captions)."""
    from mcip.data.manifest import load_records

    ids = {r["id"] for r in read_lab_manifest(root, split)}
    return [r for r in load_records(Path(root) / "manifest.jsonl") if r.id in ids]
