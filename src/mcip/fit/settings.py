"""What a ``mcip fit`` run is: its inputs, method and training size (``FitSettings``)."""

from __future__ import annotations

from dataclasses import dataclass

from mcip.errors import ConfigError
from mcip.fit.runner import METHODS, RunSettings


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
    stage_epochs: int = 3
    num_workers: int = 4
    config_2sft: str = "fit-2sft"
    config_mcip: str = "fit-mcip+rea"

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
        return super().validate()
