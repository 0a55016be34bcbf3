"""Typed configuration of a training run; YAML is only its serialisation.

Resolution order: built-in defaults  <-  per-stage defaults (SPEC section 5)  <-  the YAML file  <-
``--set a.b=value`` overrides. Unknown keys fail with the valid ones; required values left as ``???``
fail with the ``--set`` that fixes them. The resolved config is written into the run folder.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from mcip.data.textfile import check_encoding
from mcip.errors import ConfigError
from mcip.losses.mcarcmargin import DEFAULT_HARD_CAPTION_WEIGHT
from mcip.train import builders as _builders  # noqa: F401  (registers the stages)
from mcip.train.loop import LoopConfig
from mcip.train.optim import OptimConfig
from mcip.train.stage_registry import STAGE_NAMES
from mcip.train.stage_registry import STAGES as STAGE_REGISTRY

STAGES: tuple[str, ...] = STAGE_NAMES
IMAGE_STAGES: tuple[str, ...] = tuple(  # the stages that train the image tower (+ projector)
    n for n in STAGE_REGISTRY.names() if STAGE_REGISTRY.get(n).trains == "image"
)
PIPELINES: dict[str, tuple[str, ...]] = {
    "2sft": ("gpr", "realign"),
    "mcip+rea": ("mcip", "realign"),
    # wise: WiSE-FT between the starting model and the previous stage's output, alpha chosen on val
    "mcip+wise": ("mcip", "wise"),
    "mcip+wise+rea": ("mcip", "wise", "realign"),
    "2sft+wise": ("gpr", "wise", "realign"),
}
MISSING = "???"


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-5`` as a string; accept it (and ``1E5``) as a float, as people write it."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)$|^[-+]?\d+\.\d*$|^[-+]?\.\d+$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


# SPEC section 5: the authors' values, declared with each stage (mcip.train.builders)
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    n: copy.deepcopy(dict(STAGE_REGISTRY.get(n).defaults))
    for n in STAGE_REGISTRY.names()
    if STAGE_REGISTRY.get(n).defaults
}


@dataclass(frozen=True)
class ModelConfig:
    """Which model to start from and how to prepare it."""

    spec: str = MISSING
    drop_projector: bool = False
    grad_checkpointing: bool = False
    freeze_bn_stats: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)  # backend options, e.g. {embed_dim: 384}


@dataclass(frozen=True)
class DataConfig:
    """Training data: a manifest (CSV/JSONL/Parquet), an image folder, or tar shards (``*.tar``)."""

    train: str = MISSING
    root: str | None = None
    captions: str | None = None  # JSONL sidecar {"id", "captions": [...]} (the captions commands write it)
    val: str | None = None  # a separate validation manifest/folder; when set, val_fraction is not used
    val_fraction: float = 0.05
    # unseen_classes: val classes never train (val_fraction holds out whole classes; val images query each
    # other); seen_classes: val holds other images of trained classes (val_fraction holds out a fraction of
    # each class; val images query the training images); auto: seen when data.val shares a class with
    # data.train, else unseen (and unseen for val_fraction)
    val_mode: Literal["auto", "unseen_classes", "seen_classes"] = "auto"
    batch_size: int = 128
    balanced_m: int | None = None  # m images per class per batch; None = plain shuffling
    num_workers: int = 4
    max_captions: int = 20
    seed: int = 0
    encoding: str | None = None  # of CSV/JSONL manifests and the sidecar; None: UTF-8 or the file's BOM

    def __post_init__(self) -> None:
        check_encoding(self.encoding)  # an unknown codec name fails here, not after the model loaded


@dataclass(frozen=True)
class LossConfig:
    """ArcMargin / MCArcMargin settings (margins in radians) and the contrastive loss for alignment."""

    scale: float = 30.0
    margin: float = 0.1
    sub_centers: int = 1
    arc_weight: float = 0.75
    mc_weight: float = 0.25
    hard_caption_weight: float = DEFAULT_HARD_CAPTION_WEIGHT
    contrastive: Literal["infonce", "siglip"] = "infonce"
    # ArcMargin centres: "xavier" (the paper) or "class_means" (each class's mean embedding under the
    # starting model, computed once and cached; converges in fewer steps)
    centre_init: Literal["xavier", "class_means"] = "xavier"
    # gpr/mcip: + distill_weight * mean(1 - cos(f_new(x), f_start(x))) on the image embedding, f_start a
    # frozen copy of the starting model on the same augmented batch (mcip.losses.drift); 0 = off (paper)
    distill_weight: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.distill_weight, int | float) and 0 <= self.distill_weight < float("inf")):
            raise ConfigError(f"loss.distill_weight must be a number >= 0, got {self.distill_weight!r}.")


@dataclass(frozen=True)
class WiseConfig:
    """The pipelines' ``wise`` step (WiSE-FT, SPEC section 8): (1 - alpha) * start + alpha * previous
    stage's output; ``alpha: auto`` takes the ``grid`` value that ``select`` picks on the val data."""

    alpha: float | str = "auto"
    grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    select: Literal["combined", "i2i", "t2i", "guarded"] = "combined"
    parts: tuple[str, ...] | None = None  # None: every part the previous stage changed
    names: str | None = None  # 'label<TAB>name' file: val zero-shot top-1 on the curve
    batch_size: int = 64
    tolerance: float = 0.5  # select=guarded: points of val T2I R@5 / zero-shot top-1 an alpha may give up
    # select=guarded: the sides held (zeroshot alone when Re-A follows the merge)
    guard: tuple[str, ...] = ("t2i", "zeroshot")

    def __post_init__(self) -> None:
        from mcip.models.merge import check_parts
        from mcip.train.wise import (
            WISE_SELECT_KEYS,
            check_grid,
            check_guard,
            check_tolerance,
            check_val,
            parse_alpha,
        )

        object.__setattr__(self, "alpha", parse_alpha(self.alpha))
        object.__setattr__(self, "grid", check_grid(self.grid))
        object.__setattr__(self, "parts", check_parts(self.parts))
        object.__setattr__(self, "tolerance", check_tolerance(self.tolerance))
        object.__setattr__(self, "guard", check_guard(self.guard))
        if self.select not in WISE_SELECT_KEYS:
            check_val([], self.select)  # the message lists the valid values


@dataclass(frozen=True)
class TrainConfig:
    """One stage, or a pipeline of stages sharing model/data settings (``stages`` holds per-stage overrides)."""

    out: str = MISSING
    stage: str | None = None
    pipeline: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    wise: WiseConfig = field(default_factory=WiseConfig)
    unlock_text_blocks: int = 1  # realign: trainable last text blocks (+ final norm, projector, scale)
    realign_init: Literal["lstsq", "random"] = "lstsq"  # new text projector when drop_projector is set
    # realign: the frozen lower text blocks run once over every caption (states cached on disk, see
    # mcip.train.text_cache) and each step runs only the unlocked ones; false = the whole text tower every
    # step (cheaper for runs shorter than "captions per image" epochs that are never repeated)
    realign_text_cache: bool = True
    align_parts: tuple[str, ...] = ("image_projector", "text_projector", "logit_scale")
    cache_dir: str | None = None  # feature caches; default $MCIP_CACHE_DIR or ~/.cache/mcip
    stages: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ------------------------------------------------------------------ building
def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["optim.lr=1e-5", "data.train=x.csv"]`` -> nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"Override '{item}' must look like key.sub=value (e.g. optim.lr=1e-5).")
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = _yaml(raw) if raw.strip() else None
    return out


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        out[k] = (
            merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
        )
    return out


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"'{where}' must be a mapping, got {values!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"Unknown key(s) {unknown} in '{where}'. Valid keys: {', '.join(fields)}.")
    kwargs = {}
    for name, value in values.items():
        sub = _SECTIONS.get(name) if cls is TrainConfig else None
        if sub is not None:
            kwargs[name] = _build(sub, value or {}, name)
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid '{where}' settings: {exc}") from exc


_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "loop": LoopConfig,
    "loss": LossConfig,
    "wise": WiseConfig,
}


def shipped_configs() -> dict[str, Path]:
    """Configs shipped with mcip, by name (``mcip train NAME`` accepts these)."""
    folder = resources.files("mcip") / "configs"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def read_config_file(path_or_name: str | Path) -> dict[str, Any]:
    path = Path(path_or_name)
    if not path.is_file():
        shipped = shipped_configs()
        if str(path_or_name) not in shipped:
            raise ConfigError(
                f"Config '{path_or_name}' is neither a file nor a shipped config "
                f"({', '.join(sorted(shipped))})."
            )
        path = shipped[str(path_or_name)]
    try:
        data = _yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({' '.join(str(exc).split())}); fix the file.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a YAML mapping at the top level.")
    return data


def resolve_stage(raw: dict[str, Any], stage: str) -> TrainConfig:
    """Defaults <- stage defaults <- raw (<- raw['stages'][stage]); checks required values."""
    if stage not in STAGES:
        raise ConfigError(
            f"Unknown stage '{stage}'. Stages: {', '.join(STAGES)}; pipelines: {', '.join(PIPELINES)}."
        )
    stage_overrides = (raw.get("stages") or {}).get(stage, {})
    values = merge(
        merge(STAGE_DEFAULTS.get(stage, {}), {k: v for k, v in raw.items() if k != "stages"}), stage_overrides
    )
    values.update(stage=stage, pipeline=None, stages={})
    config = _build(TrainConfig, values, "config")
    _check_required(config)
    return config


def _check_required(config: TrainConfig) -> None:
    for path in ("out", "model.spec", "data.train"):
        node: Any = config
        for part in path.split("."):
            node = getattr(node, part)
        if node == MISSING or node is None:
            raise ConfigError(f"'{path}' is required: set it in the YAML file or pass --set {path}=...")


def _leaf_paths(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out += _leaf_paths(value, (*prefix, key))
        else:
            out.append((*prefix, key))
    return out


def _drop_path(tree: dict[str, Any], path: tuple[str, ...]) -> None:
    node = tree
    for key in path[:-1]:
        node = node.get(key)
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)


def nest(values: dict[str, Any] | None) -> dict[str, Any]:
    """``{"optim.lr": 1e-5, "data.train": path}`` -> nested dict, values kept as they are (typed overrides:
    no round trip through text, so a path stays a path and a float the same float)."""
    out: dict[str, Any] = {}
    for key, value in (values or {}).items():
        node = out
        *parents, leaf = str(key).split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = str(value) if isinstance(value, Path) else value
    return out


def load_config(
    path_or_name: str | Path | None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The raw (unresolved) mapping: file merged with overrides; validate with :func:`plan`.

    The command line wins over the file everywhere: an override such as ``optim.lr=1e-5`` also replaces
    that key in the file's per-stage sections (``stages: {realign: {optim: {lr: ...}}}``), which would
    otherwise take precedence in :func:`resolve_stage`; ``stages.realign.optim.lr=...`` sets one stage only.
    ``values`` are typed settings from code (dotted keys, see :func:`nest`: what ``mcip fit`` and the lab
    decide for a stage); the user's ``overrides`` win over them, key by key. Precedence, lowest first:
    built-in and per-stage defaults, the file (its ``stages:`` sections over its top level), ``values``,
    ``overrides`` (a plain key also replaces that key in every per-stage section).
    """
    raw = read_config_file(path_or_name) if path_or_name else {}
    typed, user = nest(values), parse_overrides(overrides)
    _drop_from_stages(raw, typed)
    _drop_from_stages(raw, user)
    _drop_from_stages(typed, user)
    return merge(merge(raw, typed), user)


def _drop_from_stages(lower: dict[str, Any], higher: dict[str, Any]) -> None:
    """Remove from ``lower``'s per-stage sections every plain (not ``stages.``) key that ``higher`` sets, so
    that ``higher`` wins in every stage (a per-stage key would otherwise win in :func:`resolve_stage`)."""
    sections = lower.get("stages")
    if not isinstance(sections, dict):
        return
    for path in _leaf_paths({k: v for k, v in higher.items() if k != "stages"}):
        for section in sections.values():
            if isinstance(section, dict):
                _drop_path(section, path)


def plan(raw: dict[str, Any]) -> list[TrainConfig]:
    """The stages to run, resolved: one for ``stage:``, several for ``pipeline:``."""
    stage, pipeline = raw.get("stage"), raw.get("pipeline")
    if bool(stage) == bool(pipeline):
        raise ConfigError(
            f"Set exactly one of 'stage' ({', '.join(STAGES)}) or 'pipeline' ({', '.join(PIPELINES)})."
        )
    if stage == "wise":
        raise ConfigError(
            "'wise' merges a pipeline's starting model with the previous stage's output; use a pipeline "
            f"({', '.join(p for p, s in PIPELINES.items() if 'wise' in s)}) or `mcip merge START FINETUNED`."
        )
    if stage:
        return [resolve_stage(raw, stage)]
    if pipeline not in PIPELINES:
        raise ConfigError(f"Unknown pipeline '{pipeline}'. Pipelines: {', '.join(PIPELINES)}.")
    return [resolve_stage(raw, s) for s in PIPELINES[pipeline]]


def save_resolved(config: TrainConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
