"""The quality gate before export, as TFX's Evaluator blesses a model before its Pusher
pushes it: a floor, and no worse than the newest version (docs/reports.md)."""

from pathlib import Path

from job.errors import NotBlessed
from job.export.versions import newest_recorded_accuracy

# Why these two: docs/reports.md (run-to-run noise is about 0.002; a smoke run scores 0.12).
DEFAULT_TOLERANCE = 0.005
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
    if not blessing["blessed"]:
        raise NotBlessed(f"{export_dir}: not exported: {blessing['reason']}")
