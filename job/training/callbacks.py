"""Callbacks every training loop drives: history log, backup and resume, preemption."""

import json
import signal
import time
from pathlib import Path
from typing import Self

import keras

from job.errors import JobError, Preempted
from job.files import save_keras_atomic, write_json_atomic

FINAL_MODEL = "final.keras"  # in the backup folder once training has finished
FINISHED_RECORD = "finished.json"


class EpochLog(keras.callbacks.Callback):
    """Every finished epoch's metrics and duration in ``history.json``, across restarts, keyed
    by epoch: an epoch run again after a crash replaces its entry, so each appears once."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        saved = json.loads(path.read_text()) if path.exists() else {}
        self.epochs = {int(k): v for k, v in saved.items()}

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
    """Model and optimizer each epoch, atomically (Keras' BackupAndRestore writes in place: a
    SIGKILL mid-write leaves a file no run opens); restores the chief's, saves this worker's."""

    def __init__(self, restore_dir: Path, save_dir: Path):
        super().__init__()
        self.restore_dir = restore_dir
        self.save_dir = save_dir

    def _backups(self, folder: Path) -> list[Path]:
        return sorted(folder.glob("epoch-*.keras"))

    def restore(self, model: keras.Model) -> int:
        """Load the newest backup into ``model`` (optimizer built); returns its epochs run."""
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
        """Keep the final weights and ``record``: a rerun after a later failure skips training."""
        save_keras_atomic(model, self.save_dir / FINAL_MODEL)
        write_json_atomic(self.save_dir / FINISHED_RECORD, record)

    def finished(self, model: keras.Model) -> dict | None:
        """The record of a finished training, its weights loaded into ``model``; else None."""
        record_path = self.restore_dir / FINISHED_RECORD
        if not record_path.exists():
            return None
        saved = keras.models.load_model(self.restore_dir / FINAL_MODEL, safe_mode=True)
        model.set_weights(saved.get_weights())
        return json.loads(record_path.read_text())


class PreemptionGuard(keras.callbacks.Callback):
    """While entered, SIGTERM stops training at the next batch. It raises rather than setting
    ``stop_training``, which ends the epoch: the backup would record a half-trained epoch."""

    def __init__(self):
        super().__init__()
        self.requested = False

    def _on_sigterm(self, signum, frame):
        self.requested = True

    def __enter__(self) -> Self:
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc) -> None:
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
