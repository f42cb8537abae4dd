"""TensorFlow Serving config and the REST and gRPC clients for the exported MNIST model."""
