"""The run directory: named, claimed under an OS lock (dropped when the process dies, so a
rerun after SIGKILL resumes), filled through ``.staging``, the report last, read back."""

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from job.config import RECIPES
from job.errors import JobError
from job.files import check_writable_dir, write_json_atomic
from job.report import REPORT_FILENAME

log = logging.getLogger(__name__)

# The run directory's layout (the report's own name lives in job.report).
MODEL_FILENAME = "model.keras"
HISTORY_FILENAME = "history.json"  # every finished epoch, kept across restarts
BACKUP_DIRNAME = "backup"  # the last finished epoch's state, while the run is unfinished
STAGING_DIRNAME = ".staging"  # outputs written before they are moved in together
TENSORBOARD_DIRNAME = "tensorboard"  # event files, written as training goes
LOCK_FILENAME = ".lock"
OPTIONS_FILENAME = "options.json"  # in the backup: the options an unfinished run resumes with


def new_run_name(now: datetime | None = None) -> str:
    """``<UTC timestamp>-<6 hex digits>``: unique across hosts within a second, sorted by time."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


@dataclass
class Claim:
    run_dir: Path
    created: bool
    started: bool = False  # set once training starts: from then on the folder is kept

    def mark_started(self, options: dict | None = None) -> None:
        """Training starts: keep the folder; record ``options`` for ``check_same_run``."""
        self.started = True
        if options is not None:
            write_json_atomic(self.run_dir / BACKUP_DIRNAME / OPTIONS_FILENAME, options)


def check_same_run(run_dir: Path, settings: dict) -> dict:
    """Refuse to resume an unfinished run (``settings``: ``JobConfig.to_dict``) under other
    options: its epochs would mix them. Only ``--epochs`` may grow, without an LR schedule."""
    options = {"--" + k.replace("_", "-"): v for k, v in settings["train"].items()}
    options["--data"] = settings["data_path"]
    may_grow = () if RECIPES[settings["train"]["recipe"]].warmup_cosine else ("--epochs",)
    path = run_dir / BACKUP_DIRNAME / OPTIONS_FILENAME
    before = json.loads(path.read_text()) if path.exists() else options
    changed = {k: (before.get(k), v) for k, v in options.items() if before.get(k) != v}
    grown = {k: old for k, (old, new) in changed.items() if k in may_grow and new > old}
    refused = [f"{k} {old} (now {new})" for k, (old, new) in changed.items() if k not in grown]
    if refused:
        raise JobError(
            f"{run_dir}: an unfinished run with other options: {', '.join(refused)}; rerun "
            "with its options to resume it, or pass --overwrite to start afresh"
        )
    for name, old in grown.items():
        log.info("resuming %s with %s raised from %s to %s", run_dir, name, old, options[name])
    return options


def _lock(path: Path) -> int:
    """An exclusive OS lock on ``path``, without waiting: the open descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise JobError(
                f"{path.parent}: in use by a live run ({holder}); choose another --output-dir"
            ) from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    return fd


@contextlib.contextmanager
def claim(
    run_dir: Path, overwrite: bool, exclusive: bool, lock_suffix: str = ""
) -> Iterator[Claim]:
    """Create or check ``run_dir`` (``exclusive``: a generated name, must not exist) and hold its
    lock (``lock_suffix``: another worker's own) for the run; else JobError."""
    existed = run_dir.exists()
    try:
        if exclusive:
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            run_dir.mkdir()
        check_writable_dir(run_dir)
    except FileExistsError:
        raise JobError(f"{run_dir}: already exists; choose another --output-dir") from None
    except OSError as exc:
        raise JobError(f"{run_dir}: output directory is not writable ({exc.strerror})") from None
    held = Claim(run_dir, created=not existed)
    lock = run_dir / (LOCK_FILENAME + (f"-{lock_suffix}" if lock_suffix else ""))
    fd = _lock(lock)
    try:
        if not lock_suffix and (run_dir / REPORT_FILENAME).exists() and not overwrite:
            raise JobError(
                f"{run_dir}: holds a finished run; pass --overwrite or another --output-dir"
            )
        if not lock_suffix and overwrite:  # afresh: an old backup or history would be resumed
            shutil.rmtree(run_dir / BACKUP_DIRNAME, ignore_errors=True)
            shutil.rmtree(run_dir / TENSORBOARD_DIRNAME, ignore_errors=True)
            (run_dir / HISTORY_FILENAME).unlink(missing_ok=True)
        yield held
        lock.unlink()  # a finished run keeps no lock naming a process long gone
    except BaseException:
        # A run that never started leaves nothing; only the writer that holds the lock
        # removes a folder it made: never another run's, nor one training has started to fill.
        if not lock_suffix and held.created and not held.started:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        os.close(fd)  # releases the lock


def fresh_staging(run_dir: Path) -> Path:
    """An empty staging folder; one left by a crash is discarded (never half of a run)."""
    staging = run_dir / STAGING_DIRNAME
    shutil.rmtree(staging, ignore_errors=True)
    return staging


def commit_outputs(staging: Path, run_dir: Path) -> None:
    """Move staged outputs in, the old report out first: it never describes files not its own."""
    (run_dir / REPORT_FILENAME).unlink(missing_ok=True)
    for path in sorted(staging.iterdir()):
        path.replace(run_dir / path.name)
    staging.rmdir()


def load_trained_model(run_dir: Path):
    """Load ``model.keras`` from a run with safe_mode (no arbitrary code from the file)."""
    import keras  # deferred: `job report` and the CLI's checks use this module without Keras

    path = run_dir / MODEL_FILENAME
    if not path.is_file():
        raise JobError(f"{path}: no trained model (is {run_dir} a finished run?)")
    try:
        return keras.models.load_model(path, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad file
        raise JobError(f"{path}: cannot load the model ({type(exc).__name__}: {exc})") from None
