"""TensorBoard event files laid out as Keras' callback lays them out (docs/reports.md)."""

import shutil
from pathlib import Path

import keras
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

SPLITS = {"train": "", "validation": "val_"}  # event folder: its keys' prefix in the log


class EpochSummaries(keras.callbacks.Callback):
    """Each finished epoch of ``epoch_log`` (an EpochLog placed before this) as event files."""

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
        """Rewrite the event files from the log's first ``completed_epochs`` epochs alone."""
        self.close()
        for split in SPLITS:
            shutil.rmtree(self.log_dir / split, ignore_errors=True)
        for epoch in range(completed_epochs):
            self.on_epoch_end(epoch)

    def on_epoch_end(self, epoch, logs=None):
        entry = self.epoch_log.epochs[epoch]
        for split, prefix in SPLITS.items():  # learning_rate: train's alone
            names = [k for k in ("loss", "accuracy", "learning_rate") if prefix + k in entry]
            if not names:
                continue
            with self._writer(split).as_default(step=epoch + 1):  # from 1, as the report
                for name in names:
                    tf.summary.scalar(f"epoch_{name}", entry[prefix + name])
            self._writer(split).flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def write_run_summary(
    log_dir: Path, figures: dict[str, bytes], train_config: dict, test: dict, run_name: str
) -> None:
    """The figures (PNG bytes) as images, the configuration as hparams, test metrics as theirs."""
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
