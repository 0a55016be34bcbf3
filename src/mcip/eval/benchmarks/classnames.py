"""Generic zero-shot benchmark: a folder of class sub-folders, a class-names file and prompt templates."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from mcip.errors import InputError
from mcip.eval.benchmarks.base import BENCHMARKS, Benchmark, Option, ZeroShotSet
from mcip.eval.benchmarks.files import class_folder_images, labelled, read_lines, require
from mcip.eval.benchmarks.options import path
from mcip.eval.benchmarks.zeroshot_imagenet import openai_templates

LAYOUT = (
    "Expected images=DIR of <class folder>/<image>, classnames=FILE with one 'folder<TAB>name' or 'name' line "
    "per class, and templates=FILE (one template with {} per line) or 'default'."
)


def templates_option(value: Any) -> str | Path:
    text = str(value).strip()
    return "default" if text == "default" else path(text)


def read_classnames(file: Path, folders: list[str]) -> tuple[list[str], dict[str, int]]:
    """Class names and folder -> class index. ``folder<TAB>name`` lines list the classes in file order (more
    classes than folders is fine: images are classified over all of them); plain ``name`` lines name the
    sorted folders one to one."""
    lines = read_lines(file)
    if all("\t" in line for line in lines):
        pairs = [tuple(part.strip() for part in line.split("\t", 1)) for line in lines]
        index = {folder: i for i, (folder, _) in enumerate(pairs)}
        missing = [f for f in folders if f not in index]
        if missing:
            raise InputError(f"{file} names no class for the folder(s) {', '.join(missing[:5])}. {LAYOUT}")
        return [name for _, name in pairs], index
    if any("\t" in line for line in lines):
        raise InputError(f"{file}: mix of 'folder<TAB>name' and 'name' lines; use one form. {LAYOUT}")
    if len(lines) != len(folders):
        raise InputError(
            f"{file} has {len(lines)} names for {len(folders)} class folders; plain 'name' lines must name the "
            "sorted folders one to one (or write 'folder<TAB>name' lines)."
        )
    return lines, {f: i for i, f in enumerate(folders)}


def read_templates(file: Path) -> tuple[str, ...]:
    """One template per non-empty line, each with exactly one ``{}``."""
    templates = tuple(read_lines(file))
    if not templates:
        raise InputError(f"{file} has no templates. {LAYOUT}")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise InputError(
            f"{file}: the template {bad[0]!r} needs exactly one {{}} where the class name goes "
            "(e.g. 'a photo of a {}.')."
        )
    return templates


@BENCHMARKS.register("classnames_zeroshot")
class ClassnamesZeroShot(Benchmark):
    """Zero-shot top-1 on a user's labelled images.

    Options: ``images`` (required) a folder ``<class folder>/<image>``; ``classnames`` (required) a text file,
    either one ``folder<TAB>name`` per class (file order = class order; classes without images allowed) or
    one ``name`` per sorted class folder; ``templates`` a text file of templates with ``{}`` (one per line),
    or ``default``: OpenAI's 80 ImageNet templates. The ``DATA_ROOT`` is not used.
    Command line: ``classnames_zeroshot:images=DIR,classnames=FILE[,templates=FILE]``.
    """

    name = "classnames_zeroshot"
    family = "zeroshot"
    table1_metric = "top1"
    download = LAYOUT
    option_specs: ClassVar[dict[str, Option]] = {
        "images": Option(path, required=True, help="folder of class sub-folders of images"),
        "classnames": Option(path, required=True, help="one 'folder<TAB>name' or 'name' line per class"),
        "templates": Option(templates_option, "default", help="file of templates with {}, or 'default'"),
    }

    def check(self, root: Path) -> None:
        require(self.options["images"], self.download)
        require(self.options["classnames"], self.download, folder=False)
        if self.options["templates"] != "default":
            require(self.options["templates"], self.download, folder=False)

    def load(self, root: Path) -> ZeroShotSet:
        self.check(root)
        paths, folders = class_folder_images(self.options["images"], self.download)
        names, index = read_classnames(self.options["classnames"], sorted(set(folders)))
        templates = self.options["templates"]
        templates = openai_templates() if templates == "default" else read_templates(templates)
        return ZeroShotSet(labelled(paths, (index[f] for f in folders)), tuple(names), templates)
