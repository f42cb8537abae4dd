"""GPU benchmark: both recipes with and without mixed precision and XLA, at the seed's batch
and a large one, plus in-process inference of the export. Prints one table.

    make bench-gpu                  # or: .venv/bin/python bench/bench_gpu.py [--epochs 2]

Needs a GPU that TensorFlow sees (the official tensorflow/tensorflow:<version>-gpu image:
`make bench-gpu RUNTIME=docker GPU=1`); elsewhere it says so in one line and exits 2.
About 8 minutes on one GPU: every training run is a fresh `python -m job train` process
with --epochs 2 (seconds per epoch from the second), so peak GPU memory is its own. A
script, not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from job.cpu import enable_onednn_by_default
from job.export import contract as c

# (recipe, batch size, extra options): the seed's batch and a large one, three precisions.
BATCHES = {"default": (32, 1024), "fast": (128, 1024)}
VARIANTS = {"fp32": [], "mixed": ["--mixed-precision"], "xla": ["--jit"]}
INFERENCE_BATCHES = (1, 32, 1024)


def gpu_or_exit() -> None:
    import tensorflow as tf  # only after main() asked for oneDNN: TensorFlow reads it as it loads

    if not tf.config.list_physical_devices("GPU"):
        print("bench-gpu: no GPU is visible to TensorFlow here; run it where one is "
              "(make bench-gpu RUNTIME=docker GPU=1 uses the -gpu image)")  # fmt: skip
        sys.exit(2)


def train(recipe: str, batch: int, options: list[str], epochs: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "job", "train", "--device", "gpu", "--recipe", recipe]
    cmd += ["--batch-size", str(batch), "--epochs", str(epochs), "--output-dir", str(out)]
    cmd += ["--no-gate", "--export-dir", str(out.parent / "models"), *options]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    report = json.loads((out / "metrics.json").read_text())
    return {
        "s/epoch": report["timings"]["median_epoch_seconds"],
        "examples/s": report["timings"]["examples_per_second"],
        "test_acc": report["test"]["accuracy"],
        "peak_gpu_mb": report["training"].get("peak_gpu_memory_mb"),
        "export": report["artifacts"]["export"],
    }


def inference(export: str) -> dict[int, float]:
    """Images per second through serving_default, in process, per batch size."""
    import numpy as np
    import tensorflow as tf  # see gpu_or_exit

    serve = tf.saved_model.load(export).signatures[c.SIGNATURE_PIXELS]
    rates = {}
    for batch in INFERENCE_BATCHES:
        pixels = tf.constant(np.zeros((batch, c.IMAGE_SIZE, c.IMAGE_SIZE), np.uint8))
        for _ in range(5):
            serve(**{c.INPUT_PIXELS: pixels})
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < 2.0:
            serve(**{c.INPUT_PIXELS: pixels})[c.OUTPUT_DIGIT].numpy()
            calls += 1
        rates[batch] = calls * batch / (time.perf_counter() - started)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per training run")
    args = parser.parse_args()
    enable_onednn_by_default()  # as the job's CLI does, before TensorFlow loads
    gpu_or_exit()
    rows, export = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for recipe, batches in BATCHES.items():
            for batch in batches:
                for name, options in VARIANTS.items():
                    out = Path(tmp) / f"{recipe}-{batch}-{name}"
                    result = train(recipe, batch, options, args.epochs, out)
                    export = export or result.get("export")
                    rows.append({"recipe": recipe, "batch": batch, "variant": name, **result})
        rates = inference(export) if export else {}
    print(f"{'recipe':8} {'batch':>5} {'variant':7} {'s/epoch':>8} {'ex/s':>9} "
          f"{'test acc':>8} {'peak GPU MB':>11}")  # fmt: skip
    for r in rows:
        if "error" in r:
            print(f"{r['recipe']:8} {r['batch']:>5} {r['variant']:7} failed: {r['error']}")
            continue
        peak = f"{r['peak_gpu_mb']:.0f}" if r["peak_gpu_mb"] is not None else "-"
        print(f"{r['recipe']:8} {r['batch']:>5} {r['variant']:7} {r['s/epoch']:>8.2f} "
              f"{r['examples/s']:>9.0f} {r['test_acc']:>8.4f} {peak:>11}")  # fmt: skip
    for batch, rate in rates.items():
        print(f"inference, batch {batch:>4}: {rate:,.0f} images/s")


if __name__ == "__main__":
    main()
