"""Revisited Oxford and Paris (Radenović et al., 2018): 70 queries against the database, revisitop ground truth."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np

from mcip.errors import InputError
from mcip.eval.benchmarks.base import BENCHMARKS, Benchmark, Images, RevisitedSet
from mcip.eval.benchmarks.files import require, require_files

_REVISITOP = "http://cmp.felk.cvut.cz/revisitop/data/datasets"


def _index_array(values: object) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).reshape(-1)


class _Revisited(Benchmark):
    """Shared loader; ``dataset`` is the revisitop name (``roxford5k`` / ``rparis6k``).

    Layout (revisitop's ``data/datasets``): ``DATA_ROOT/<dataset>/jpg/<name>.jpg`` and
    ``DATA_ROOT/<dataset>/gnd_<dataset>.pkl``, a pickled dict with ``imlist`` (database names), ``qimlist``
    (query names) and ``gnd`` (per query: ``easy``, ``hard``, ``junk`` index lists into ``imlist``, and
    ``bbx``). Queries are the full images (no bounding-box crop); Table 1 reports the Medium protocol.
    """

    family = "i2i"
    table1_metric = "medium_map"
    dataset: ClassVar[str]

    def check(self, root: Path) -> None:
        folder = Path(root) / self.dataset
        require(folder / "jpg", self.download)
        require(folder / f"gnd_{self.dataset}.pkl", self.download, folder=False)

    def load(self, root: Path) -> RevisitedSet:
        self.check(root)
        folder = Path(root) / self.dataset
        gnd_path = folder / f"gnd_{self.dataset}.pkl"
        with open(gnd_path, "rb") as f:
            cfg = pickle.load(f)
        if not isinstance(cfg, dict) or not {"imlist", "qimlist", "gnd"} <= set(cfg):
            raise InputError(
                f"{gnd_path}: expected a dict with 'imlist', 'qimlist' and 'gnd'; re-download it."
            )
        if len(cfg["gnd"]) != len(cfg["qimlist"]):
            raise InputError(
                f"{gnd_path}: {len(cfg['gnd'])} ground-truth entries for {len(cfg['qimlist'])} queries."
            )
        database = [folder / "jpg" / f"{name}.jpg" for name in cfg["imlist"]]
        queries = [folder / "jpg" / f"{name}.jpg" for name in cfg["qimlist"]]
        require_files(database + queries, self.download, gnd_path)
        gnd = tuple(
            {
                "easy": _index_array(g.get("easy", [])),
                "hard": _index_array(g.get("hard", [])),
                "junk": _index_array(g.get("junk", [])),
                "bbx": np.asarray(g.get("bbx", []), dtype=np.float64),
            }
            for g in cfg["gnd"]
        )
        # The pickle's order is the database order the gnd indices refer to: kept as is.
        return RevisitedSet(database=Images(tuple(database)), queries=Images(tuple(queries)), gnd=gnd)


@BENCHMARKS.register("roxford5k")
class ROxford5k(_Revisited):
    """Revisited Oxford 5k: ``DATA_ROOT/roxford5k/{jpg/*.jpg, gnd_roxford5k.pkl}`` (see the base class)."""

    name = "roxford5k"
    dataset = "roxford5k"
    download = (
        "Download the Oxford Buildings images (https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/oxbuild_images.tgz) "
        f"into DATA_ROOT/roxford5k/jpg/ and {_REVISITOP}/roxford5k/gnd_roxford5k.pkl into DATA_ROOT/roxford5k/ "
        "(revisitop's download.py, https://github.com/filipradenovic/revisitop, builds exactly this layout under "
        "data/datasets: use that folder as DATA_ROOT)."
    )


@BENCHMARKS.register("rparis6k")
class RParis6k(_Revisited):
    """Revisited Paris 6k: ``DATA_ROOT/rparis6k/{jpg/*.jpg, gnd_rparis6k.pkl}`` (see the base class)."""

    name = "rparis6k"
    dataset = "rparis6k"
    download = (
        "Download the Paris images (https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_1.tgz and "
        "paris_2.tgz), put every .jpg directly in DATA_ROOT/rparis6k/jpg/, and download "
        f"{_REVISITOP}/rparis6k/gnd_rparis6k.pkl into DATA_ROOT/rparis6k/ (revisitop's download.py, "
        "https://github.com/filipradenovic/revisitop, builds exactly this layout under data/datasets)."
    )
