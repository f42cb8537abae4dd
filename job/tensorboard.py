"""TensorBoard event files in ``<run>/tensorboard``, laid out as Keras' callback lays them
out, every value from the run's epoch log so they agree with the report (docs/reports.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import tensorflow as tf

TRAIN, VALIDATION = "train", "validation"


class EpochSummaries(keras.callbacks.Callback):
    """Writes each finished epoch of ``epoch_log`` (a callbacks.EpochLog placed before this
    one) to the train and validation event files."""

    def __init__(self, log_dir: Path, epoch_log):
        super().__init__()
        self.log_dir = log_dir
        self.epoch_log = epoch_log
        self._writers: dict[str, tf.summary.SummaryWriter] = {}

    def _writer(self, split: str) -> tf.summary.SummaryWriter:
        if split not in self._writers:
            self._writers[split] = tf.summary.create_file_writer(str(self.log_dir / split))
        return self._writers[split]

    def restart(self, completed_epochs: int) -> None:
        """Start the event files afresh with the first ``completed_epochs`` epochs of the log:
        whatever a cut-off process wrote after its last backup is gone."""
        self.close()
        for split in (TRAIN, VALIDATION):
            shutil.rmtree(self.log_dir / split, ignore_errors=True)
        for epoch in range(completed_epochs):
            self.write_epoch(epoch)

    def write_epoch(self, epoch: int) -> None:
        entry = self.epoch_log.epochs[epoch]
        for split, prefix in ((TRAIN, ""), (VALIDATION, "val_")):
            values = {k: entry[prefix + k] for k in ("loss", "accuracy") if prefix + k in entry}
            if not values:
                continue
            with self._writer(split).as_default(step=epoch + 1):  # from 1, as the report
                for name, value in values.items():
                    tf.summary.scalar(f"epoch_{name}", value)
                if split == TRAIN and "learning_rate" in entry:
                    tf.summary.scalar("epoch_learning_rate", entry["learning_rate"])
            self._writer(split).flush()

    def on_epoch_end(self, epoch, logs=None):
        self.write_epoch(epoch)

    def on_train_end(self, logs=None):
        self.close()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def write_run_summary(
    log_dir: Path, figures: dict[str, bytes], train_config: dict, test: dict, run_name: str
) -> None:
    """The four figures (PNG bytes) as images, the training configuration as hparams and
    the test loss and accuracy as their metrics."""
    from tensorboard.plugins.hparams import api as hp

    for earlier in log_dir.glob("events.out.tfevents.*"):  # a rerun's summary replaces it
        earlier.unlink()
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default(step=0):
        for name, png in figures.items():
            image = tf.io.decode_png(png, channels=4)[tf.newaxis]
            tf.summary.image(f"figures/{Path(name).stem}", image)
        # hparams take bool, int, float or str only.
        hp.hparams({k: "none" if v is None else v for k, v in train_config.items()}, run_name)
        tf.summary.scalar("test/accuracy", test["accuracy"])
        tf.summary.scalar("test/loss", test["loss"])
    writer.close()
