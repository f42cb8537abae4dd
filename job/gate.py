"""The quality gate before export: is the new model good enough to serve?

A model is blessed when its test accuracy reaches ``--min-test-accuracy`` and is
no worse than the newest exported version's recorded test accuracy minus a tolerance, as
TFX's Evaluator blesses a model before its Pusher pushes it. An unblessed run still writes
its report, figures and model.keras, but no version.
"""

from __future__ import annotations

from pathlib import Path

from job.errors import NotBlessed
from job.export.versions import newest_recorded_accuracy

# The default recipe's test accuracy moves by about 0.002 from run to run (0.9833-0.9852
# over seeds and days); half a percent lets that noise through and stops a clearly worse
# model, such as one trained on a subset or for one epoch (0.90-0.97).
DEFAULT_TOLERANCE = 0.005
# The floor a model must reach to be exported at all: five times chance (0.1), far under what
# a normal run reaches (0.98), so a smoke run (--limit 5 --epochs 1: 0.12) is never served.
DEFAULT_MIN_TEST_ACCURACY = 0.5


def decide(
    test_accuracy: float,
    export_dir: Path,
    min_test_accuracy: float,
    compare: bool,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict:
    """The report's ``blessing``: whether to export, why, and the baseline compared with."""
    baseline = newest_recorded_accuracy(export_dir) if compare else None
    reasons = []
    if test_accuracy < min_test_accuracy:
        reasons.append(
            f"test accuracy {test_accuracy:.4f} is under --min-test-accuracy "
            f"{min_test_accuracy} (pass a lower one, or 0, to export it anyway)"
        )
    if baseline is not None and test_accuracy < baseline[1] - tolerance:
        reasons.append(
            f"test accuracy {test_accuracy:.4f} is more than {tolerance} under version "
            f"{baseline[0]}'s {baseline[1]:.4f} (pass --no-gate to export it anyway)"
        )
    return {
        "blessed": not reasons,
        "reason": "; ".join(reasons) or None,
        "min_test_accuracy": min_test_accuracy,
        "baseline": {"version": baseline[0], "test_accuracy": baseline[1]} if baseline else None,
        "tolerance": tolerance if compare else None,
    }


def refuse_unblessed(blessing: dict, export_dir: Path) -> None:
    """Raise NotBlessed (its own exit code) for a model the gate did not bless."""
    if not blessing["blessed"]:
        raise NotBlessed(f"{export_dir}: not exported: {blessing['reason']}")
