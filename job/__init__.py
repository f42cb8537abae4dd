"""MNIST CNN batch job: train, evaluate, report and export for TensorFlow Serving."""

__version__ = "0.1.0"
