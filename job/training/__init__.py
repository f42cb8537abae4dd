"""Training, one module per concern.

- ``devices``: which device trains, thread pools, seeds, precision, slices per batch.
- ``inputs``: the tf.data pipeline (validation split, per-epoch shuffle, random shifts).
- ``optimizer``: Adam as each recipe sets it up.
- ``callbacks``: the per-epoch history log, backup and resume, and preemption on SIGTERM.
- ``strategies``: none, mirrored or multi-worker, and which worker writes.
- ``loops``: the three training loops side by side behind one call, ``loops.train``.
"""
