"""Callbacks every training loop drives: history log, backup and resume, preemption."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import keras

from job.errors import JobError, Preempted
from job.files import save_keras_atomic, write_json_atomic

FINAL_MODEL = "final.keras"  # in the backup folder once training has finished
FINISHED_RECORD = "finished.json"


class EpochLog(keras.callbacks.Callback):
    """Keeps every finished epoch's metrics and duration in ``history.json``, across restarts.

    Keras' History only holds the epochs of the current ``fit`` call. This log is keyed by
    epoch number, so an epoch run again after a crash replaces its earlier entry and each
    epoch appears exactly once.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.epochs: dict[int, dict] = {}
        if path.exists():
            self.epochs = {int(k): v for k, v in json.loads(path.read_text()).items()}
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        entry = {k: float(v) for k, v in (logs or {}).items()}
        # The rate the optimizer applies now: a schedule evaluated at its step count.
        entry["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        entry["seconds"] = time.perf_counter() - self._started
        self.epochs[epoch] = entry
        write_json_atomic(self.path, {str(k): v for k, v in sorted(self.epochs.items())})

    def history(self, epochs: int) -> list[dict]:
        missing = [e for e in range(epochs) if e not in self.epochs]
        if missing:
            raise JobError(f"{self.path}: epochs {missing} were never completed")
        return [{"epoch": e + 1, **self.epochs[e]} for e in range(epochs)]


class EpochBackup(keras.callbacks.Callback):
    """Saves model and optimizer state after every epoch, atomically, to resume from.

    Keras' BackupAndRestore writes in place, so a SIGKILL mid-write leaves a file the next
    run cannot open. Each backup here is a whole ``.keras`` file written under a temporary
    name and renamed to ``epoch-NNNN.keras``: the newest backup is always complete.

    A run restores from ``restore_dir`` (the chief's) and saves to ``save_dir``: the same
    folder but on the other workers of a multi-worker run, which save to their own.
    """

    def __init__(self, restore_dir: Path, save_dir: Path):
        super().__init__()
        self.restore_dir = restore_dir
        self.save_dir = save_dir

    def _backups(self, folder: Path) -> list[Path]:
        return sorted(folder.glob("epoch-*.keras"))

    def restore(self, model: keras.Model) -> int:
        """Load the newest backup into ``model`` (its optimizer built); returns how many
        epochs it had finished."""
        backups = self._backups(self.restore_dir)
        if not backups:
            return 0
        saved = keras.models.load_model(backups[-1], safe_mode=True)
        model.set_weights(saved.get_weights())
        for target, source in zip(
            model.optimizer.variables, saved.optimizer.variables, strict=True
        ):
            target.assign(source)
        return int(backups[-1].stem.split("-")[1])

    def on_epoch_end(self, epoch, logs=None):
        self.save_dir.mkdir(parents=True, exist_ok=True)
        final = save_keras_atomic(self.model, self.save_dir / f"epoch-{epoch + 1:04d}.keras")
        for older in self._backups(self.save_dir):
            if older != final:
                older.unlink(missing_ok=True)

    def save_finished(self, model: keras.Model, record: dict) -> None:
        """Training is over: keep its final weights and ``record`` until the run's outputs
        are committed, so a run that fails after training (a full disk, say) goes straight
        to evaluation and export when run again."""
        save_keras_atomic(model, self.save_dir / FINAL_MODEL)
        write_json_atomic(self.save_dir / FINISHED_RECORD, record)

    def finished(self, model: keras.Model) -> dict | None:
        """If training had finished, load its final weights into ``model`` and return its
        record; otherwise None."""
        record_path = self.restore_dir / FINISHED_RECORD
        if not record_path.exists():
            return None
        saved = keras.models.load_model(self.restore_dir / FINAL_MODEL, safe_mode=True)
        model.set_weights(saved.get_weights())
        return json.loads(record_path.read_text())


class PreemptionGuard(keras.callbacks.Callback):
    """On SIGTERM, stop at the next batch without finishing the epoch.

    It raises rather than setting ``stop_training``: a stopped ``fit`` still ends the epoch,
    and the backup would then record a half-trained epoch as done.
    """

    def __init__(self):
        super().__init__()
        self.requested = False
        self._previous = None

    def _on_sigterm(self, signum, frame):
        self.requested = True

    def install(self) -> None:
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    # Checked before each batch, not after: a callback with an after-batch hook makes Keras
    # wait for every step's metrics (it then turns off its asynchronous callback dispatch).
    def on_train_batch_begin(self, batch, logs=None):
        if self.requested:
            raise Preempted(
                "SIGTERM received: stopped; the last backup is kept, "
                "run the same command again to resume"
            )
