"""TensorFlow Serving config and the REST and gRPC clients for the exported MNIST model.

``serving`` reaches the job only through ``job.export.contract``, which imports nothing heavy.
"""


class ServingError(Exception):
    """A failed request or an input that cannot be sent; the message is one line, and
    ``code`` names the failure for counting: "HTTP 400", a gRPC code such as
    "INVALID_ARGUMENT", "DEADLINE_EXCEEDED" or "UNAVAILABLE" (both protocols), or "" for an
    input refused before sending."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code
