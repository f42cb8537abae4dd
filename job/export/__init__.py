"""The SavedModel that TensorFlow Serving loads, and the contract its clients rely on."""
