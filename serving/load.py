"""A load test, like TF Serving's mnist_client.py (--concurrency, --num_tests) but bounded by a
count and a time, with latency percentiles and errors counted by code."""

import threading
import time
from collections import Counter
from concurrent import futures
from dataclasses import dataclass, field

from serving import ServingError


def percentile(values: list[float], q: float) -> float:
    """The value at rank ``q`` (0..1) of ``values``, no interpolation."""
    return sorted(values)[round(q * (len(values) - 1))]


@dataclass
class LoadResult:
    """What a load run measured; ``latencies`` are the answered requests' seconds."""

    images_per_request: int
    concurrency: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    first_errors: dict[str, str] = field(default_factory=dict)  # code -> its first message

    @property
    def requests(self) -> int:
        return len(self.latencies) + sum(self.errors.values())

    def summary(self) -> dict:
        answered = len(self.latencies)
        rate = answered / self.seconds if self.seconds else 0.0
        return {
            "requests": self.requests,
            "answered": answered,
            "concurrency": self.concurrency,
            "images_per_request": self.images_per_request,
            "seconds": round(self.seconds, 3),
            "requests_per_second": round(rate, 2),
            "images_per_second": round(rate * self.images_per_request, 1),
            "latency_ms": {  # None when nothing was answered: JSON has no NaN
                name: round(1000 * percentile(self.latencies, q), 2) if self.latencies else None
                for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
            },
            "errors": dict(sorted(self.errors.items())),
            "first_errors": dict(sorted(self.first_errors.items())),
        }

    def table(self) -> str:
        s = self.summary()
        lat = {k: "-" if v is None else f"{v:.1f}" for k, v in s["latency_ms"].items()}
        lines = [
            f"{s['requests']} requests ({s['answered']} answered) of {s['images_per_request']} "
            f"images at concurrency {s['concurrency']} in {s['seconds']:.1f} s",
            f"throughput: {s['requests_per_second']:.1f} requests/s, "
            f"{s['images_per_second']:.0f} images/s",
            f"latency ms: p50 {lat['p50']}, p90 {lat['p90']}, p99 {lat['p99']}, max {lat['max']}",
        ]
        errors = [f"  {code} {n}: {s['first_errors'][code]}" for code, n in s["errors"].items()]
        return "\n".join([*lines, "errors: " + ("" if errors else "none"), *errors])


def run_load(
    make_sender,
    images_per_request: int,
    concurrency: int,
    max_requests: int | None,
    max_seconds: float,
    progress,
) -> LoadResult:
    """Send from ``concurrency`` workers until ``max_requests`` are sent or ``max_seconds`` pass.
    ``make_sender()`` runs per worker before the clock starts and returns ``send(i)``, which sends
    request i or raises ServingError with its code; ``progress`` gets the result once a second."""
    result = LoadResult(images_per_request, concurrency)
    lock, counter = threading.Lock(), iter(range(max_requests or 2**62))
    senders = [make_sender() for _ in range(concurrency)]
    started = time.perf_counter()
    deadline = started + max_seconds

    def worker(send) -> None:
        while time.perf_counter() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            sent = time.perf_counter()
            try:
                send(i)
                with lock:
                    result.latencies.append(time.perf_counter() - sent)
            except ServingError as exc:
                with lock:
                    result.errors[exc.code or "CLIENT"] += 1
                    result.first_errors.setdefault(exc.code or "CLIENT", str(exc))

    with futures.ThreadPoolExecutor(concurrency) as pool:
        running = [pool.submit(worker, send) for send in senders]
        while futures.wait(running, timeout=1.0).not_done:
            result.seconds = time.perf_counter() - started
            progress(result)
        for done in running:
            done.result()  # a bug in a worker surfaces here
    result.seconds = time.perf_counter() - started
    return result
