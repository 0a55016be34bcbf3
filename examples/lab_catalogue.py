"""A "your own data" catalogue made from the prepared lab, for trying `mcip fit` (README: Fine-tune on your
own images): emoji the lab's base model never trained on, as a CSV of path and label, a names file and a
validation CSV, the way a shop or a museum would have them.

    python examples/lab_catalogue.py catalogue [--classes 300] [--root ~/.cache/mcip/lab]

Writes ``catalogue/train.csv`` (the Google drawings of ``--classes`` emoji of the lab's test split: one
"product photo" per class), ``catalogue/test.csv`` (the Twitter and Facebook drawings of the same emoji:
other photos of the same products, two per class, so a test image finds its class's other one),
``catalogue/val.csv`` (the lab's val split: other emoji, for validation on unseen classes),
``catalogue/names.tsv`` (``label<TAB>name``: labels are code points, names the CLDR names) and
``catalogue/pool.txt`` (the lab's train captions: a text corpus to retrieve pseudo-captions from).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
from pathlib import Path

from mcip.data.lab_manifest import read_lab_manifest


def _write(path: Path, rows: list[dict]) -> int:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows([r["path"], r["label"]] for r in rows)
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--classes", type=int, default=300, help="emoji in the catalogue (300)")
    parser.add_argument("--root", type=Path, default=Path.home() / ".cache" / "mcip" / "lab")
    parser.add_argument("--train-vendor", default="google", help="whose drawings are the catalogue photos")
    args = parser.parse_args()
    rows = [dict(r, path=str((args.root / r["path"]).resolve())) for r in read_lab_manifest(args.root)]
    test = [r for r in rows if r["split"] == "test"]
    order = sorted({r["label"] for r in test}, key=lambda s: hashlib.blake2b(s.encode()).digest())
    chosen = set(order[: args.classes])
    args.out.mkdir(parents=True, exist_ok=True)
    train = [r for r in test if r["label"] in chosen and r["vendor"] == args.train_vendor]
    shown = [r for r in test if r["label"] in chosen and r["vendor"] != args.train_vendor]
    val = [r for r in rows if r["split"] == "val"]
    counts = {
        "train": _write(args.out / "train.csv", train),
        "test": _write(args.out / "test.csv", shown),
        "val": _write(args.out / "val.csv", val),
    }
    names = {r["label"]: r["captions"][0] for r in [*train, *shown, *val]}
    if not train or not shown:
        raise SystemExit(
            f"{args.root}: no test-split images of vendor {args.train_vendor!r} and another one."
        )
    (args.out / "names.tsv").write_text("".join(f"{k}\t{v}\n" for k, v in sorted(names.items())), "utf-8")
    pool = sorted({c for r in rows if r["split"] == "train" for c in r["captions"]})
    (args.out / "pool.txt").write_text("".join(c + "\n" for c in pool), "utf-8")
    print(
        f"{args.out}: train {counts['train']} images / {len(chosen)} classes, test {counts['test']}, "
        f"val {counts['val']} (other classes), names {len(names)}, pool {len(pool)} texts"
    )


if __name__ == "__main__":
    main()
