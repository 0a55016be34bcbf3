"""A stage that would repeat a finished run of the same rows: found from that run's records, not trained.

Two stages with the same starting weights and the same resolved settings, except which val metric selects
the checkpoint (``loop.select``), train the same steps: the data order, the augmentation and every update
depend on the seed, the data and the settings, never on the metric (checkpoints and validations leave
the generators as they were). Only where each stops (early stopping counts validations without a new
best of ITS metric) and which checkpoint it keeps differ. So when the finished run's ``metrics.jsonl``
(every validation's results) shows that the other metric stops within the steps the finished run trained,
and picks the step whose weights the finished run kept, the second run's model is the finished run's
model: :func:`reused_run` writes it as the second stage's model with what chose it, and says why.

The lab's guarded row is the case: when WiSE-FT picks alpha 1, its start is the MCIP row's model, and its
Re-A differs from the MCIP+Re-A row's only by selecting on ``combined`` instead of T2I.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mcip.engine.checkpoint import Selection

# what may differ: the folders (caches are keyed by content), the start (compared by its weights), the metric
IGNORED = ("out", "cache_dir", "model.spec", "loop.select")


def replay_selection(
    metrics: Path, metric: str, patience: int | None, start_candidate: bool
) -> tuple[int | None, int | None]:
    """(best step, step of the validation that stops it) of a run selecting on ``metric`` with early
    stopping ``patience``, replayed on the validations recorded in ``metrics`` (a run's
    ``metrics.jsonl``; the step-0 record is the starting model's, a candidate only with
    ``start_candidate``, as :class:`mcip.engine.trainer.Trainer` counts it). The stop is None when the
    recorded validations end before it would stop."""
    selection = Selection(metric, patience)
    for line in Path(metrics).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        results = {k[4:]: v for k, v in record.items() if k.startswith("val/")}
        if not results:
            continue
        step = int(record["step"])
        if step == 0:
            if start_candidate:
                selection.update(results, 0)
            continue
        selection.update(results, step)
        if selection.stopped:
            return selection.best_step, step
    return selection.best_step, None


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _flat(value, f"{name}.")
        else:
            out[name] = value
    return out


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    flat = _flat(json.loads(json.dumps(config, default=str)))
    return {k: v for k, v in flat.items() if k not in IGNORED}


def reuse_reason(cfg, finished: Path) -> tuple[str | None, dict[str, Any]]:
    """Why stage ``cfg`` (resolved) would train what the finished run in ``finished`` (a run folder with
    ``model/`` and ``metrics.jsonl``) already trained, with the facts: (None, {...}) when it would not
    (or it cannot be shown), else (the reason in words, {"best_step", "stop_step", ...})."""
    from mcip.engine.validate import SELECT_KEYS
    from mcip.models import load_model
    from mcip.models.checkpoint import read_meta
    from mcip.models.fingerprint import model_fingerprint

    finished = Path(finished)
    if not (finished / "model").is_dir() or not (finished / "metrics.jsonl").is_file():
        return None, {"why_not": "no finished run"}
    if cfg.loop.select not in SELECT_KEYS:
        return None, {"why_not": f"loop.select={cfg.loop.select} is not explicit"}
    extra = read_meta(finished / "model").get("extra", {})
    before = extra.get("config")
    if not isinstance(before, dict):
        return None, {"why_not": "no recorded settings"}
    now, then = _settings(cfg.to_dict()), _settings(before)
    differ = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
    if differ:
        return None, {"why_not": f"other settings ({', '.join(differ[:4])})"}
    model = before.get("model", {})
    start = load_model(cfg.model.spec, drop_projector=cfg.model.drop_projector, **cfg.model.kwargs)
    other = load_model(
        model.get("spec"), drop_projector=model.get("drop_projector"), **model.get("kwargs", {})
    )
    if model_fingerprint(start) != model_fingerprint(other):
        return None, {"why_not": "another starting model"}
    metric = SELECT_KEYS[cfg.loop.select]
    best, stop = replay_selection(
        finished / "metrics.jsonl", metric, cfg.loop.early_stopping_patience, cfg.loop.select == "combined"
    )
    facts = {"metric": metric, "best_step": best, "stop_step": stop, "kept_step": extra.get("best_step")}
    if stop is None:
        return None, {**facts, "why_not": f"{metric} had not stopped when the finished run did"}
    if best is None or best == 0 or best != extra.get("best_step"):
        return None, {
            **facts,
            "why_not": f"{metric} picks a step whose weights the finished run did not keep",
        }
    reason = (
        f"the same start and settings as {finished.name} (only the selection differs); on its val record "
        f"{metric} picks step {best} and stops at step {stop}, within its run: its model"
    )
    return reason, facts


def reused_run(cfg, finished: Path, reason: str, facts: dict[str, Any]) -> Path:
    """Write the finished run's model as stage ``cfg``'s (``cfg.out/model``), its record saying what chose
    it (``val_metric``, ``best_step``, ``best_metric``, ``reused_from``), and ``cfg.out/reused.json``."""
    from mcip.models import load_model, save_model
    from mcip.models.checkpoint import read_meta

    finished, out = Path(finished), Path(cfg.out)
    before = read_meta(finished / "model").get("extra", {})
    best_metric = None
    for line in (finished / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("step") == facts["best_step"] and f"val/{facts['metric']}" in record:
            best_metric = record[f"val/{facts['metric']}"]
    extra = {
        **before,
        "val_metric": facts["metric"],
        "best_step": facts["best_step"],
        "best_metric": best_metric,
        "config": json.loads(json.dumps(cfg.to_dict(), default=str)),
        "reused_from": str(finished),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "reused.json").write_text(
        json.dumps({"from": str(finished), "reason": reason, **facts}, indent=2) + "\n", encoding="utf-8"
    )
    save_model(load_model(finished / "model"), out / "model", extra=extra)
    return out / "model"
