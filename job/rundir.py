"""The run directory: prepared before a run, filled through a staging folder, read back.

A run writes its outputs to ``.staging`` first and moves them in at the end, with
``metrics.json`` written last: a run directory with a report is a finished run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from job.errors import JobError
from job.files import check_writable_dir
from job.report import REPORT_FILENAME

# The run directory's layout (the report's own name lives in job.report).
MODEL_FILENAME = "model.keras"
HISTORY_FILENAME = "history.json"  # every finished epoch, kept across restarts
BACKUP_DIRNAME = "backup"  # the last finished epoch's state, while the run is unfinished
STAGING_DIRNAME = ".staging"  # outputs written before they are moved in together


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse to clobber a finished run unless asked; clear it when asked.

    Raises:
        JobError: a finished run is there and ``overwrite`` is false, or it cannot be written.
    """
    finished = (run_dir / REPORT_FILENAME).exists()
    if finished and not overwrite:
        raise JobError(f"{run_dir}: holds a finished run; pass --overwrite or another --output-dir")
    try:
        check_writable_dir(run_dir)
    except OSError as exc:
        raise JobError(f"{run_dir}: output directory is not writable ({exc.strerror})") from None
    if overwrite:  # start afresh: an old backup or history would be resumed otherwise
        shutil.rmtree(run_dir / BACKUP_DIRNAME, ignore_errors=True)
        (run_dir / HISTORY_FILENAME).unlink(missing_ok=True)


def fresh_staging(run_dir: Path) -> Path:
    """An empty staging folder; one left by a crash is discarded (never half of a run)."""
    staging = run_dir / STAGING_DIRNAME
    shutil.rmtree(staging, ignore_errors=True)
    return staging


def commit_outputs(staging: Path, run_dir: Path) -> None:
    """Move a complete set of staged outputs into the run directory.

    The old report goes first and the new one is written after the moves: a report never
    sits beside files it does not describe.
    """
    (run_dir / REPORT_FILENAME).unlink(missing_ok=True)
    for path in sorted(staging.iterdir()):
        path.replace(run_dir / path.name)
    staging.rmdir()


def load_trained_model(run_dir: Path):
    """Load ``model.keras`` from a run with safe_mode (no arbitrary code from the file)."""
    import keras

    path = run_dir / MODEL_FILENAME
    if not path.is_file():
        raise JobError(f"{path}: no trained model (is {run_dir} a finished run?)")
    try:
        return keras.models.load_model(path, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad file
        raise JobError(f"{path}: cannot load the model ({type(exc).__name__}: {exc})") from None
