"""Keras' own ``fit``: the loop for MirroredStrategy (several GPUs of one machine)."""

from __future__ import annotations

from job.training.inputs import batches


def run_keras_fit(model, train_ds, val_ds, epochs, initial_epoch, callbacks, verbose, shards=1):
    """``model.fit`` over repeated datasets with the epoch length given, so Keras keeps one
    iterator for the whole run instead of making one per epoch. ``shards`` is unused."""
    model.fit(
        train_ds.repeat(),
        steps_per_epoch=batches(train_ds),
        initial_epoch=initial_epoch,
        validation_data=val_ds.repeat() if val_ds is not None else None,
        validation_steps=batches(val_ds) if val_ds is not None else None,
        epochs=epochs,
        shuffle=False,
        callbacks=callbacks,
        verbose=verbose,
    )
