"""Fake npm archives that mimic the real emoji packages' layout, and a fake ``npm`` executable."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

from PIL import Image

VENDORS = ("facebook", "google", "twitter")
COLORS = {"facebook": (0, 0, 255, 255), "google": (0, 255, 0, 255), "twitter": (255, 0, 0, 255)}
SUBS = ("animal-mammal", "animal-bird", "animal-bug")


def png_bytes(color: tuple[int, int, int, int]) -> bytes:
    """A 4x4 RGBA PNG in ``color`` whose pixel (0, 0) is fully transparent black."""
    image = Image.new("RGBA", (4, 4), color)
    image.putpixel((0, 0), (0, 0, 0, 0))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _entry(unified, name, short, sub, vendors=VENDORS, category="Animals & Nature", skins=None):
    entry = {
        "unified": unified,
        "name": name,
        "short_names": short,
        "image": unified.lower() + ".png",
        "category": category,
        "subcategory": sub,
    }
    entry.update({f"has_img_{v}": v in vendors for v in VENDORS})
    if skins:
        entry["skin_variations"] = skins
    return entry


def _skin(unified, vendors=VENDORS):
    return {
        "unified": unified,
        "image": unified.lower() + ".png",
        **{f"has_img_{v}": v in vendors for v in VENDORS},
    }


def emoji_entries() -> list[dict]:
    """A few special emoji plus 30 plain animals in three sub-categories."""
    hand_skins = {"1F3FB": _skin("1F44B-1F3FB"), "1F3FC": _skin("1F44B-1F3FC", vendors=("google",))}
    entries = [
        _entry("1F600", "GRINNING FACE", ["grinning"], "face-smiling", category="Smileys & Emotion"),
        _entry(
            "1F44B",
            "WAVING HAND SIGN",
            ["wave"],
            "hand-fingers-open",
            category="People & Body",
            skins=hand_skins,
        ),
        _entry(
            "2764-FE0F", "HEAVY BLACK HEART", ["heart", "red_heart"], "heart", category="Smileys & Emotion"
        ),
        _entry("1F34C", "BANANA", ["banana"], "food-fruit", vendors=("google",), category="Food & Drink"),
        _entry("1F34E", "RED APPLE", ["apple"], "food-fruit", category="Food & Drink"),
    ]
    for i in range(30):
        code = f"1F4{i:02X}"
        entries.append(_entry(code, f"ANIMAL {i}", [f"animal_{i}"], SUBS[i % 3]))
    return entries


def emojibase_entries() -> list[dict]:
    return [
        {"hexcode": "1F600", "label": "grinning face", "tags": ["face", "grin"], "emoji": "😀"},
        {
            "hexcode": "1F44B",
            "label": "waving hand",
            "tags": ["hello", "wave"],
            "skins": [
                {"hexcode": "1F44B-1F3FB", "label": "waving hand: light skin tone", "tone": 1},
                {"hexcode": "1F44B-1F3FC", "label": "waving hand: medium-light skin tone", "tone": 2},
            ],
        },
        {"hexcode": "2764", "label": "red heart", "tags": ["heart", "love"], "emoji": "❤"},
        {"hexcode": "1F34E", "label": "red apple", "tags": ["apple", "fruit"]},
    ]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_vendor_tgz(path: Path, vendor: str, reverse: bool = False) -> None:
    entries = emoji_entries()
    if reverse:
        entries = entries[::-1]
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "package/package.json", b'{"name": "emoji-datasource-%s"}' % vendor.encode())
        _add(tar, "package/emoji.json", json.dumps(entries).encode())
        _add(tar, f"package/img/{vendor}/sheets/64.png", png_bytes((1, 2, 3, 255)))
        for entry in entries:
            for variant in [entry, *entry.get("skin_variations", {}).values()]:
                if not variant[f"has_img_{vendor}"]:
                    continue
                data = png_bytes(COLORS[vendor])
                if variant["unified"] == "1F34E" and vendor == "twitter":
                    data = b"not a png"
                _add(tar, f"package/img/{vendor}/64/{variant['image']}", data)


def write_store(store: Path, reverse: bool = False) -> Path:
    """The four archives, named as ``npm pack`` names them, in ``store``."""
    store.mkdir(parents=True, exist_ok=True)
    for vendor in VENDORS:
        write_vendor_tgz(store / f"emoji-datasource-{vendor}-16.0.0.tgz", vendor, reverse)
    with tarfile.open(store / "emojibase-data-17.0.0.tgz", "w:gz") as tar:
        _add(tar, "package/en/data.json", json.dumps(emojibase_entries()).encode())
        _add(tar, "package/fr/data.json", b"[]")
    return store


FAKE_NPM = """#!{python}
import pathlib, shutil, sys
store = pathlib.Path({store!r})
args = sys.argv[1:]
with open(store / "calls.log", "a") as log:
    log.write(" ".join(args) + "\\n")
name, version = args[1].rsplit("@", 1)
dest = pathlib.Path(args[args.index("--pack-destination") + 1])
file = store / f"{{name}}-{{version}}.tgz"
if not file.is_file():
    print(f"npm error 404 Not Found - GET https://registry.npmjs.org/{{name}}", file=sys.stderr)
    sys.exit(1)
shutil.copy(file, dest / file.name)
print(file.name)
"""


def write_fake_npm(store: Path) -> Path:
    """An executable that serves ``npm pack NAME@VERSION --pack-destination DIR`` from ``store``."""
    script = store / "npm"
    script.write_text(FAKE_NPM.format(python=sys.executable, store=str(store)))
    script.chmod(0o755)
    return script


def npm_calls(store: Path) -> int:
    log = store / "calls.log"
    return len(log.read_text().splitlines()) if log.is_file() else 0
