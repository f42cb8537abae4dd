"""Training: devices, inputs, optimizer, callbacks, cluster, strategies and the loop."""
