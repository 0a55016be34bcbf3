"""A catalogue that looks like product photos, made from the prepared lab's emoji, for trying `mcip fit`
(docs/fit-example.md): emoji the lab's base model never trained on, each photographed several times on
textured backgrounds, with names, description captions and a text pool, the way a shop would have them.

    python examples/photo_catalogue.py catalogue [--products 120] [--seed 0] [--root ~/.cache/mcip/lab]

Writes ``catalogue/train.csv``, ``val.csv``, ``test.csv`` (path,label,captions; 8 / 2 / 6 photos per
product), ``catalogue/images/``, ``names.tsv`` (label<TAB>name), ``pool.txt`` (description sentences) and
``catalogue.json`` (counts, seed). The work is :func:`mcip.lab.catalogue.make_photo_catalogue`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mcip.errors import MCIPError
from mcip.lab.catalogue import PHOTOS, make_photo_catalogue


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write (new, empty, or an earlier catalogue)")
    parser.add_argument("--products", type=int, default=120, help="products in the catalogue (120)")
    parser.add_argument("--seed", type=int, default=0, help="which products and photos (0)")
    parser.add_argument("--root", type=Path, default=Path.home() / ".cache" / "mcip" / "lab", help="lab root")
    for split, count in PHOTOS.items():
        parser.add_argument(
            f"--{split}-photos", type=int, default=count, help=f"photos per product ({count})"
        )
    parser.add_argument("--size", type=int, default=224, help="photo side in pixels (224)")
    args = parser.parse_args()
    photos = {split: getattr(args, f"{split}_photos") for split in PHOTOS}
    try:
        catalogue = make_photo_catalogue(
            args.root, args.out, args.products, photos, seed=args.seed, size=args.size, progress=True
        )
    except MCIPError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(catalogue)
    return 0


if __name__ == "__main__":
    sys.exit(main())
