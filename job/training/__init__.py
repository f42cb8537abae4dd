"""Training: devices, inputs, optimizer, callbacks, cluster, slurm, strategies and the loop."""
