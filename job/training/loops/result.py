"""What every training loop returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainResult:
    history: list[dict]  # one entry per epoch, in order, each exactly once
    seconds: float  # wall time of training in this process
    resumed_from_epoch: int  # 0 for a fresh run
    stopped_early_at: int | None  # epoch count when early stopping ended training
    writes_outputs: bool = True  # False on multi-worker workers other than the chief
