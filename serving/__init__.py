"""TensorFlow Serving clients for the exported MNIST model; the job is reached only through
``job.export.contract``, which imports nothing heavy."""


class ServingError(Exception):
    """A failed request or a refused input, in one line. ``code`` names the failure for counting:
    "HTTP 400", a gRPC code ("DEADLINE_EXCEEDED", "UNAVAILABLE": REST too), or "" before sending."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code
