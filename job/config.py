"""Frozen configuration, built once by the CLI and passed down as plain values."""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Recipe:
    """How the seed's model is fed and optimised. Both recipes train the same six layers."""

    name: str
    batch_size: int
    epochs: int
    warmup_cosine: bool  # learning rate: linear warm-up then cosine decay (else Adam defaults)
    peak_learning_rate: float
    translate_pixels: int  # random shifts of up to this many pixels in the input pipeline
    weight_decay: float | None  # Adam's decoupled weight decay (None: none, as the seed)


DEFAULT_RECIPE = Recipe("default", 32, 5, False, 0.001, 0, None)
# All 60,000 images for the whole schedule (a 10% hold-out for early stopping cost accuracy at
# every seed tried); weight decay 0.05 lifted the lowest seeds (docs/performance.md).
FAST_RECIPE = Recipe("fast", 128, 20, True, 0.005, 2, 0.05)
RECIPES = {recipe.name: recipe for recipe in (DEFAULT_RECIPE, FAST_RECIPE)}


# --steps-per-execution: 128 measured faster than 64 and 32 (docs/performance.md).
DEFAULT_STEPS_PER_EXECUTION = 128


@dataclass(frozen=True)
class TrainConfig:
    recipe: str
    epochs: int
    batch_size: int
    validation_split: float
    seed: int
    limit: int | None
    device: str
    deterministic: bool
    mixed_precision: bool
    jit: bool
    steps_per_execution: int
    distribute: str


@dataclass(frozen=True)
class JobConfig:
    run_dir: Path
    new_run_dir: bool  # a generated name: the folder must not exist yet
    data_path: Path | None
    cache_dir: Path
    allow_network: bool
    export: bool
    export_dir: Path
    export_version: int | None
    min_test_accuracy: float  # the quality gate's floor
    gate: bool  # also compare with the newest exported version
    gate_tolerance: float
    overwrite: bool
    train: TrainConfig
    # The cluster, port and thread variables, read once by the CLI (cluster.read_environment).
    environ: Mapping[str, str]

    def to_dict(self) -> dict:
        """Plain JSON-ready values (paths as strings), for the report."""
        out = dataclasses.asdict(self)
        del out["environ"]
        return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}
