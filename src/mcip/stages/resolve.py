"""Reading and resolving a training config (:mod:`mcip.stages.config` holds its types).

Resolution order: built-in defaults  <-  per-stage defaults (SPEC section 5, declared with each stage)
<-  the YAML file  <-  ``--set a.b=value`` overrides. Unknown keys fail with the valid ones; required
values left as ``???`` fail with the ``--set`` that fixes them. The resolved config is written into the
run folder. The stages' modules are imported (and so registered) only when a stage is resolved.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mcip.engine.loop_config import LoopConfig
from mcip.engine.optim import OptimConfig
from mcip.errors import ConfigError
from mcip.stages.config import (
    CONTRASTIVE_LOSSES,
    MISSING,
    PIPELINES,
    STAGES,
    DataConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
    WiseConfig,
)


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


# SPEC section 5: the authors' values, declared with each stage (mcip.stages.gpr)


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
        sub = _SECTIONS.get(name) if cls is TrainConfig and not isinstance(value, LossConfig) else None
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
        merge(stage_defaults(stage), {k: v for k, v in raw.items() if k != "stages"}), stage_overrides
    )
    values.update(stage=stage, pipeline=None, stages={})
    values["loss"] = resolve_loss(values.get("loss") or {}, stage)
    config = _build(TrainConfig, values, "config")
    _check_required(config)
    return config


LOSS_OPTIONS = tuple(f.name for f in dataclasses.fields(LossConfig) if f.name != "settings")


def resolve_loss(values: dict[str, Any], stage: str) -> LossConfig:
    """``loss:`` for ``stage``: its options (:class:`LossConfig`) and the settings of the loss it trains
    with (the registry entry's ``loss``, or ``contrastive`` for realign / align), defaults from the loss.

    Every other key must be a setting of some loss (a pipeline shares ``loss:`` among its stages, so
    ``loss.mc_weight`` is MCIP's and the other stages leave it); an unknown key fails with the valid ones.
    """
    from mcip.losses import list_losses, loss_settings

    if not isinstance(values, dict):
        raise ConfigError(f"'loss' must be a mapping, got {values!r}.")
    options = {k: v for k, v in values.items() if k in LOSS_OPTIONS and k != "name"}
    try:
        base = LossConfig(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid 'loss' settings: {exc}") from exc
    name = loss_of_stage(stage, base.contrastive)
    own = loss_settings(name) if name else {}
    others = {k for n in list_losses() for k in loss_settings(n)}
    unknown = sorted(set(values) - set(LOSS_OPTIONS) - others)
    if unknown:
        raise ConfigError(
            f"Unknown key(s) {unknown} in 'loss'. The {stage} stage's loss {name or '(none)'} takes "
            f"{', '.join(own) or 'no settings'}; the options are {', '.join(LOSS_OPTIONS)}; other losses' "
            f"settings: {', '.join(sorted(others - set(own)))}."
        )
    if values.get("name") not in (None, name):
        raise ConfigError(
            f"loss.name={values['name']!r}, but the {stage} stage trains with {name!r}; remove loss.name "
            f"(realign and align choose theirs with loss.contrastive: {', '.join(CONTRASTIVE_LOSSES)})."
        )
    settings = {**own, **{k: v for k, v in values.items() if k in own}}
    return dataclasses.replace(base, name=name, settings=settings)


def loss_of_stage(stage: str, contrastive: str) -> str | None:
    """The loss ``stage`` trains with (None for a pipeline step that trains nothing)."""
    from mcip.stages.catalog import stage_entry

    entry = stage_entry(stage)
    return entry.loss or (contrastive if entry.builder is not None else None)


def stage_defaults(stage: str) -> dict[str, Any]:
    """The config values ``stage`` declares (SPEC section 5: the authors' values), from its registry entry."""
    from mcip.stages.catalog import stage_entry

    return copy.deepcopy(dict(stage_entry(stage).defaults))


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
