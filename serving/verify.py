"""A post-deploy check: does the served model answer as the run that made it reported?

Sends the whole MNIST test set in batches within the contract's limit, compares the served
accuracy with the run's reported test accuracy, checks the served signatures against the
contract, and measures request latency.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np

from job.export import contract as c
from serving import ServingError

# Each signature's input and output names, as the exporter writes them.
EXPECTED_SIGNATURES = {
    c.SIGNATURE_PIXELS: ({c.INPUT_PIXELS}, {c.OUTPUT_PROBABILITIES, c.OUTPUT_DIGIT}),
    c.SIGNATURE_PIXELS_FLOAT: ({c.INPUT_PIXELS}, {c.OUTPUT_PROBABILITIES, c.OUTPUT_DIGIT}),
    c.SIGNATURE_IMAGE_BYTES: ({c.INPUT_IMAGE_BYTES}, {c.OUTPUT_PROBABILITIES, c.OUTPUT_DIGIT}),
}


@dataclass(frozen=True)
class Verification:
    served_accuracy: float
    reported_accuracy: float
    images: int
    requests: int
    images_per_second: float
    p50_ms: float
    p99_ms: float

    @property
    def agrees(self) -> bool:
        """The same number of correct answers (the report's figure is a float32 mean)."""
        return round(self.served_accuracy * self.images) == round(
            self.reported_accuracy * self.images
        )

    def summary(self) -> str:
        relation = "=" if self.agrees else "!="
        return (
            f"served accuracy {self.served_accuracy:.4f} {relation} reported "
            f"{self.reported_accuracy:.4f}; {self.images} images in {self.requests} requests, "
            f"{self.images_per_second:.0f} images/s, p50 {self.p50_ms:.1f} ms, "
            f"p99 {self.p99_ms:.1f} ms"
        )


def check_signatures(metadata: dict) -> None:
    """Raise ServingError unless the served signatures carry the contract's names."""
    served = metadata["metadata"]["signature_def"]["signature_def"]
    for name, (inputs, outputs) in EXPECTED_SIGNATURES.items():
        if name not in served:
            raise ServingError(f"the served model has no signature {name!r}")
        got = set(served[name]["inputs"]), set(served[name]["outputs"])
        if got != (inputs, outputs):
            raise ServingError(
                f"signature {name!r} has inputs {sorted(got[0])} and outputs "
                f"{sorted(got[1])}; the contract says {sorted(inputs)} and {sorted(outputs)}"
            )


def serve_test_set(predict, images: np.ndarray, labels: np.ndarray, batch_size: int):
    """Send every image in batches; returns (accuracy, latencies in seconds, wall seconds)."""
    correct, latencies = 0, []
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        sent = time.perf_counter()
        answer = predict(images[start : start + batch_size])
        latencies.append(time.perf_counter() - sent)
        digits = np.asarray(answer[c.OUTPUT_DIGIT])
        correct += int(np.sum(digits == labels[start : start + batch_size]))
    return correct / len(images), latencies, time.perf_counter() - started


def verify(predict, metadata: dict, images, labels, reported_accuracy, batch_size) -> Verification:
    check_signatures(metadata)
    accuracy, latencies, wall = serve_test_set(predict, images, labels, batch_size)
    ordered = sorted(latencies)
    return Verification(
        served_accuracy=accuracy,
        reported_accuracy=reported_accuracy,
        images=len(images),
        requests=len(latencies),
        images_per_second=len(images) / wall,
        p50_ms=1000 * statistics.median(ordered),
        p99_ms=1000 * ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
    )
