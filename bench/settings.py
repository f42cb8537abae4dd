"""Compare the default recipe's speed under settings that the job's design chose between.

    .venv/bin/python bench/settings.py [--rounds 2] [--epochs 5]

Each variant is one ``python -m job train`` in a fresh process; the variants alternate
round by round so that drift in the machine's speed hits them alike. Prints the median
seconds per epoch (the job's own report, first epoch excluded) per variant, and its
fastest epoch. A script, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

JOB = ["-m", "job"]


def patched(statement: str) -> list[str]:
    """Start the job's CLI after ``statement``: for a mechanism that has no option."""
    return ["-c", f"import sys; {statement}; from job.cli import main; sys.argv[0] = 'job'; main()"]


class Variant(NamedTuple):
    env: dict[str, str] = {}
    options: list[str] = []
    start: list[str] = JOB  # how Python starts the job's CLI


VARIANTS: dict[str, Variant] = {
    "as shipped": Variant(),
    "Keras' Adam update (no fused kernel)": Variant(
        start=patched(
            "import job.training.optimizer as o; o.fused_adam_kernel_works = lambda: False"
        )
    ),
    "whole batches (no slices; same threads)": Variant(
        start=patched("import job.training.devices as d; d.batch_shards = lambda used, batch: 1")
    ),
    "TensorFlow's thread defaults": Variant(
        env={"TF_NUM_INTRAOP_THREADS": "0", "TF_NUM_INTEROP_THREADS": "0"}
    ),
    "one slice per batch (inter-op 1)": Variant(env={"TF_NUM_INTEROP_THREADS": "1"}),
    "ops split over 2 threads (intra-op 2)": Variant(env={"TF_NUM_INTRAOP_THREADS": "2"}),
    "--steps-per-execution 1": Variant(options=["--steps-per-execution", "1"]),
    "--steps-per-execution 32": Variant(options=["--steps-per-execution", "32"]),
    "--steps-per-execution 64": Variant(options=["--steps-per-execution", "64"]),
    "--steps-per-execution 256": Variant(options=["--steps-per-execution", "256"]),
    "--jit (XLA)": Variant(options=["--jit"]),
    "oneDNN off": Variant(env={"TF_ENABLE_ONEDNN_OPTS": "0"}),
}


def run(variant: Variant, epochs: int, out: Path) -> list[float]:
    """Seconds of each epoch after the first (tracing and compilation) of one training run."""
    cmd = [sys.executable, *variant.start, "train", "--no-export", "--epochs", str(epochs)]
    cmd += ["--output-dir", str(out), *variant.options]
    done = subprocess.run(cmd, env={**os.environ, **variant.env}, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    epochs_s = json.loads((out / "metrics.json").read_text())["timings"]["epoch_seconds"]
    return epochs_s[1:] or epochs_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run")
    parser.add_argument(
        "--variants",
        type=lambda text: [name.strip() for name in text.split(",")],
        default=list(VARIANTS),
        help="comma-separated names of the variants to compare with 'as shipped' (default: all)",
    )
    args = parser.parse_args()
    if unknown := set(args.variants) - set(VARIANTS):
        parser.error(f"--variants: {', '.join(sorted(unknown))}: choose from {', '.join(VARIANTS)}")
    variants = {name: VARIANTS[name] for name in ["as shipped", *args.variants]}
    seconds: dict[str, list[list[float]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for i, (name, variant) in enumerate(variants.items()):
                out = Path(tmp) / f"{round_}-{i}"
                seconds[name].append(run(variant, args.epochs, out))
    print_table(seconds)


def print_table(seconds: dict[str, list[list[float]]]) -> None:
    """Per variant: the median over runs of each run's median epoch, and the fastest epoch
    of all its runs (on a shared machine, the one least slowed by the others' work)."""
    medians = {name: [statistics.median(run) for run in runs] for name, runs in seconds.items()}
    fastest = {name: min(min(run) for run in runs) for name, runs in seconds.items()}
    base, base_fastest = statistics.median(medians["as shipped"]), fastest["as shipped"]
    print(
        f"{'variant':<40} {'s/epoch':>8} {'vs shipped':>10} {'fastest':>8} {'vs shipped':>10}"
        "   runs"
    )
    for name, values in medians.items():
        median, runs = statistics.median(values), ", ".join(f"{v:.2f}" for v in values)
        print(
            f"{name:<40} {median:>8.2f} {median / base:>9.2f}x {fastest[name]:>8.2f} "
            f"{fastest[name] / base_fastest:>9.2f}x   {runs}"
        )


if __name__ == "__main__":
    main()
