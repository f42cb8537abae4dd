"""Training, one module per concern.

- ``devices``: which device trains, thread pools, seeds, precision, slices per batch.
- ``inputs``: the tf.data pipeline (validation split, per-epoch shuffle, random shifts).
- ``optimizer``: Adam as each recipe sets it up, and the fused update behind its check.
- ``callbacks``: the per-epoch history log, backup and resume, and preemption on SIGTERM.
- ``cluster``, ``slurm``: the cluster from TF_CONFIG or Slurm's variables.
- ``strategies``: none, mirrored or multi-worker, and which worker writes.
- ``loop``: one replica step and one loop for every strategy, behind ``train_model``.
"""
