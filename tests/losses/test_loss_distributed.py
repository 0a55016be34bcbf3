"""InfoNCE and SigLIP across 2 CPU processes (gloo) equal the single-process loss on the full batch.

The parent writes the inputs to tmp_path, two spawned ranks each take half the batch and save their
loss values and gradients, and the parent compares them with one full-batch computation:

* value: the mean of the per-rank losses equals the full-batch loss (and with ``local_loss=False``
  every rank's value equals it);
* gradients w.r.t. the embeddings: with the autograd-aware gather, rank r's gradient for its own rows
  is the sum over ranks of d loss_r' / d rows = W * d(full loss) / d rows, which DDP's 1/W averaging
  turns into the full-batch gradient; so grad / W must equal the full-batch gradient's rows;
* a real DistributedDataParallel model: its averaged parameter gradients equal the full-batch ones.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mcip.errors import InputError
from mcip.losses import InfoNCELoss, SigLIPLoss

WORLD, LOCAL, DIM = 2, 3, 5
INFONCE_VARIANTS = [(True, True), (True, False), (False, True), (False, False)]  # (local, with_grad)


class TwoTower(nn.Module):
    """A tiny dual encoder: one linear projection per side, the log temperature, SigLIP's bias."""

    def __init__(self, with_bias: bool) -> None:
        super().__init__()
        self.image, self.text = nn.Linear(DIM, DIM), nn.Linear(DIM, DIM)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        self.logit_bias = nn.Parameter(torch.tensor(-1.0)) if with_bias else None

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.image(x), dim=1), F.normalize(self.text(t), dim=1)


def _run(loss: nn.Module, images, texts, scale, bias=None) -> dict[str, torch.Tensor]:
    """Loss value and gradients w.r.t. the (B, D) inputs and the scalar parameters."""
    images, texts = images.clone().requires_grad_(), texts.clone().requires_grad_()
    scale = scale.clone().requires_grad_()
    extra = () if bias is None else (bias.clone().requires_grad_(),)
    value = loss(images, texts, scale, *extra)
    value.backward()
    out = {"loss": value.detach(), "images": images.grad, "texts": texts.grad, "scale": scale.grad}
    if extra:
        out["bias"] = extra[0].grad
    return out


def _run_ddp(model: nn.Module, loss_name: str, x, t) -> dict[str, torch.Tensor]:
    """Loss and parameter gradients of a (possibly DDP-wrapped) TwoTower."""
    images, texts = model(x, t)
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    if loss_name == "infonce":
        value = InfoNCELoss()(images, texts, inner.logit_scale)
    else:
        value = SigLIPLoss()(images, texts, inner.logit_scale, inner.logit_bias)
    value.backward()
    return {"loss": value.detach(), **{n: p.grad.clone() for n, p in inner.named_parameters()}}


def _worker(rank: int, folder: str) -> None:
    init = f"file://{folder}/rendezvous"
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    try:
        data = torch.load(f"{folder}/inputs.pt")
        rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
        images, texts, scale, bias = data["images"][rows], data["texts"][rows], data["scale"], data["bias"]
        results: dict[str, object] = {}
        for local, with_grad in INFONCE_VARIANTS:
            loss = InfoNCELoss(local_loss=local, gather_with_grad=with_grad)
            results[f"infonce-{local}-{with_grad}"] = _run(loss, images, texts, scale)
        results["siglip"] = _run(SigLIPLoss(), images, texts, scale, bias)
        for name in ("infonce", "siglip"):
            model = TwoTower(with_bias=name == "siglip").double()
            model.load_state_dict(data[f"model-{name}"])
            results[f"ddp-{name}"] = _run_ddp(DistributedDataParallel(model), name, images, texts)
        try:  # rank 0 passes 1 row, rank 1 passes 2 rows
            InfoNCELoss()(images[: rank + 1], texts[: rank + 1], scale)
        except InputError as exc:
            results["unequal"] = str(exc)
        torch.save(results, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Spawn the two ranks once; returns (full-batch inputs, [rank 0 results, rank 1 results])."""
    folder = tmp_path_factory.mktemp("ddp")
    gen = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(WORLD * LOCAL, DIM, generator=gen, dtype=torch.float64), dim=1)
    texts = F.normalize(images + torch.randn(images.shape, generator=gen, dtype=torch.float64), dim=1)
    torch.manual_seed(0)
    data = {
        "images": images,
        "texts": texts,
        "scale": torch.tensor(2.0, dtype=torch.float64),
        "bias": torch.tensor(-1.5, dtype=torch.float64),
        "model-infonce": TwoTower(with_bias=False).double().state_dict(),
        "model-siglip": TwoTower(with_bias=True).double().state_dict(),
    }
    torch.save(data, folder / "inputs.pt")
    mp.spawn(_worker, args=(str(folder),), nprocs=WORLD, join=True)  # re-raises a rank's exception
    return data, [torch.load(folder / f"rank{r}.pt") for r in range(WORLD)]


def _assert_equivalent(
    per_rank: list[dict], full: dict, keys_rows: tuple[str, ...], keys_scalar: tuple[str, ...]
):
    mean_loss = sum(r["loss"] for r in per_rank) / WORLD
    torch.testing.assert_close(mean_loss, full["loss"], rtol=1e-12, atol=1e-12)
    for key in keys_rows:  # DDP averaging: rank r's rows' gradient / W
        torch.testing.assert_close(torch.cat([r[key] for r in per_rank]) / WORLD, full[key])
    for key in keys_scalar:  # replicated parameters: DDP averages their gradients
        torch.testing.assert_close(sum(r[key] for r in per_rank) / WORLD, full[key])


@pytest.mark.ddp
@pytest.mark.timeout(120)
@pytest.mark.parametrize(("local", "with_grad"), INFONCE_VARIANTS)
def test_infonce_matches_full_batch(ranks, local, with_grad):
    data, per_rank = ranks
    per_rank = [r[f"infonce-{local}-{with_grad}"] for r in per_rank]
    full = _run(InfoNCELoss(), data["images"], data["texts"], data["scale"])
    if with_grad:
        _assert_equivalent(per_rank, full, ("images", "texts"), ("scale",))
    else:  # only the value is the full-batch one; gradients miss the other ranks' terms
        torch.testing.assert_close(sum(r["loss"] for r in per_rank) / WORLD, full["loss"])
        assert all(torch.isfinite(r["images"]).all() and torch.isfinite(r["texts"]).all() for r in per_rank)
    if not local:  # every rank computes the whole (W*B, W*B) logits matrix
        for r in per_rank:
            torch.testing.assert_close(r["loss"], full["loss"])


@pytest.mark.ddp
@pytest.mark.timeout(120)
def test_siglip_matches_full_batch(ranks):
    data, per_rank = ranks
    full = _run(SigLIPLoss(), data["images"], data["texts"], data["scale"], data["bias"])
    _assert_equivalent([r["siglip"] for r in per_rank], full, ("images", "texts"), ("scale", "bias"))


@pytest.mark.ddp
@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["infonce", "siglip"])
def test_ddp_model_gradients_match_full_batch(ranks, name):
    data, per_rank = ranks
    model = TwoTower(with_bias=name == "siglip").double()
    model.load_state_dict(data[f"model-{name}"])
    full = _run_ddp(model, name, data["images"], data["texts"])
    torch.testing.assert_close(sum(r[f"ddp-{name}"]["loss"] for r in per_rank) / WORLD, full["loss"])
    for key, grad in full.items():
        if key != "loss":
            for r in per_rank:  # DDP already averaged: every rank holds the full-batch gradient
                torch.testing.assert_close(r[f"ddp-{name}"][key], grad, msg=f"{name} {key}")


@pytest.mark.ddp
@pytest.mark.timeout(120)
def test_unequal_batch_sizes_fail_on_every_rank_with_the_fix(ranks):
    _, per_rank = ranks
    for r in per_rank:
        assert "same batch size on every rank, got [1, 2]" in r["unequal"]
        assert "drop_last=True" in r["unequal"]
