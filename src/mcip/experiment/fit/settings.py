"""What a ``mcip fit`` run is: its inputs, method and training size (``FitSettings``)."""

from __future__ import annotations

from dataclasses import dataclass

from mcip.errors import ConfigError
from mcip.experiment.rows import METHODS, RunSettings


@dataclass(frozen=True)
class FitSettings(RunSettings):
    """A ``mcip fit`` run: the inputs, the method and (from :class:`RunSettings`) how the rows train."""

    data: str = ""  # training manifest
    model: str = ""  # starting model: a spec or an mcip model folder
    method: str = "mcip+rea"
    val: str | None = None
    test: str | None = None
    names: str | None = None  # label<TAB>name
    pool: str | None = None  # texts for caption retrieval
    val_fraction: float = 0.1
    templates_per_image: int = 5
    seed: int = 0
    # None: each image stage runs until val stops improving (at most the search mode's max_epochs); an
    # int: exactly that many epochs (then the length is not searched)
    stage_epochs: int | None = None
    num_workers: int = 4
    config_2sft: str = "fit-2sft"
    config_mcip: str = "fit-mcip+rea"
    # the recipe (mcip.experiment.fit.recipe): None = chosen on val by the search (or the config's value without it)
    lr: float | None = None  # the image stages' learning rate
    realign_lr: float | None = None
    mc_weight: float | None = None
    hard_caption_weight: float | None = None
    search: str = "auto"  # auto (quick on a CPU, full with a GPU), quick, full, off
    trials: int | None = None  # trials per study (default: the mode's)
    budget_min: float | None = None  # wall-clock budget of the whole search, in minutes

    def validate(self) -> FitSettings:
        if not self.data:
            raise ConfigError("mcip fit needs the training manifest: --data train.csv.")
        if not self.model:
            raise ConfigError(
                "mcip fit needs the starting model: --model SPEC (e.g. openclip:ViT-B-32/openai, "
                "hf:openai/clip-vit-base-patch32, or an mcip model folder)."
            )
        if self.method not in METHODS:
            raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}.")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"--val-fraction must be in (0, 1), got {self.val_fraction}.")
        if self.templates_per_image < 1:
            raise ConfigError(f"--templates-per-image must be >= 1, got {self.templates_per_image}.")
        for flag, value in (("--lr", self.lr), ("--realign-lr", self.realign_lr)):
            if value is not None and not 0 < value < 1:
                raise ConfigError(f"{flag} must be a learning rate in (0, 1), e.g. 1e-4; got {value}.")
        if self.hard_caption_weight is not None and not 0 <= self.hard_caption_weight < float("inf"):
            raise ConfigError(f"--hard-caption-weight must be >= 0, got {self.hard_caption_weight}.")
        from mcip.experiment.fit.search import SEARCH_MODES

        if self.search not in SEARCH_MODES:
            raise ConfigError(f"--search must be one of {', '.join(SEARCH_MODES)}, got {self.search!r}.")
        if self.trials is not None and self.trials < 1:
            raise ConfigError(f"--trials must be >= 1, got {self.trials}.")
        if self.budget_min is not None and not 0 < self.budget_min < float("inf"):
            raise ConfigError(f"--budget-min must be a number of minutes > 0, got {self.budget_min}.")
        return super().validate()
