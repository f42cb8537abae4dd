"""Training, one module per concern: devices, inputs, optimizer, callbacks, cluster and slurm,
strategies, and ``loop`` (one replica step and one loop for every strategy)."""
