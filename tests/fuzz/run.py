"""`make fuzz`: hostile requests against the three signatures of a real export, with oneDNN on
and off, each request in a child process under a memory cap and a timeout. A crash (any
signal), a timeout, memory over the cap or an error other than InvalidArgument fails the run and
saves the request under --found.

    python -m tests.fuzz.run --minutes 30            # per oneDNN setting
    python -m tests.fuzz.run --minutes 1 --export models/mnist/3
"""

from __future__ import annotations

import argparse
import pickle
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings

from tests.fuzz.mutations import requests
from tests.fuzz.worker import Answer, Worker, make_export


@dataclass
class Campaign:
    onednn: bool
    cases: int = 0
    answered: dict[str, int] = field(default_factory=dict)
    slowest: float = 0.0
    slowest_request: str = ""
    peak_rss_growth: float = 0.0
    failures: list[Path] = field(default_factory=list)

    def row(self, seconds: float) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.answered.items()))
        return (
            f"oneDNN {'on ' if self.onednn else 'off'}  {self.cases} cases in {seconds:.0f} s "
            f"({counts}); peak RSS +{self.peak_rss_growth / 1e6:.0f} MB over the loaded model; "
            f"slowest {self.slowest:.2f} s: {self.slowest_request}"
        )


def describe(request, answer: Answer) -> str:
    signature, value = request
    if isinstance(value, list):
        kinds = sorted({bytes(raw[:4]) for raw in value})
        size = f"{len(value)} images, {sum(map(len, value))} bytes, starting {kinds[:3]}"
    else:
        size = f"{value.shape} {value.dtype}"
    return f"{signature} of {size}, {answer.status} {answer.detail[:80]}"


def save(found: Path, request, answer: Answer) -> Path:
    """The request as a pickle, its images as files, and what happened."""
    found.mkdir(parents=True, exist_ok=True)
    case = found / f"{answer.status}-{time.strftime('%Y%m%dT%H%M%S')}-{time.monotonic_ns()}"
    case.mkdir()
    (case / "request.pickle").write_bytes(pickle.dumps(request))
    (case / "answer.txt").write_text(f"{answer}\n")
    signature, value = request
    if isinstance(value, list):
        for i, raw in enumerate(value[:8]):
            (case / f"image-{i}.bin").write_bytes(raw)
    return case


def fuzz(export_dir: Path, onednn: bool, seconds: float, found: Path) -> Campaign:
    """Send generated requests to one worker until ``seconds`` have passed."""
    campaign, worker = Campaign(onednn), Worker(export_dir, onednn)
    deadline = time.monotonic() + seconds

    @settings(
        max_examples=200,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(requests())
    def one(request):
        if time.monotonic() > deadline:
            return
        answer = worker.ask(*request)
        campaign.cases += 1
        campaign.answered[answer.status] = campaign.answered.get(answer.status, 0) + 1
        if answer.seconds > campaign.slowest:
            campaign.slowest, campaign.slowest_request = answer.seconds, describe(request, answer)
        campaign.peak_rss_growth = max(campaign.peak_rss_growth, answer.rss_growth)
        if answer.failed:
            campaign.failures.append(save(found, request, answer))
            print(f"FOUND {answer.status}: {answer.detail} -> {campaign.failures[-1]}", flush=True)

    try:
        worker.start()
        while time.monotonic() < deadline:
            one()
    finally:
        worker.stop()
    return campaign


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="per oneDNN setting")
    parser.add_argument("--export", type=Path, help="an export version folder (default: a new one)")
    parser.add_argument("--found", type=Path, default=Path("build/fuzz"), help="failing inputs")
    parser.add_argument("--onednn", choices=["1", "0", "both"], default="both")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fuzz-export-") as tmp:
        export_dir = args.export or make_export(Path(tmp))
        failures = 0
        for onednn in {"1": [True], "0": [False], "both": [True, False]}[args.onednn]:
            start = time.monotonic()
            campaign = fuzz(export_dir, onednn, args.minutes * 60, args.found)
            print(campaign.row(time.monotonic() - start), flush=True)
            failures += len(campaign.failures)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"workers' CPU {children.ru_utime + children.ru_stime:.0f} s; {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
