"""Benchmark: the seed notebook's code path against the job's training, plus inference.

    make bench                      # or: .venv/bin/python bench/bench.py [--quick]

Every training run is a fresh subprocess (so peak memory is its own), and the seed and job
runs alternate so that drift in the machine's speed hits both alike. Prints tables; it is
a script, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from job.cpu import cpu_description, onednn_enabled
from job.export import contract as c

REPO = Path(__file__).resolve().parents[1]
DATA = (
    Path(os.environ.get("MNIST_JOB_CACHE_DIR", Path.home() / ".cache" / "mnist-job")) / "mnist.npz"
)


# --------------------------------------------------------------------------- workers


def seed_worker(epochs: int) -> dict:
    """The notebook's cells, as written: float64 arrays, model.fit at batch 32, and
    TensorFlow's own oneDNN choice (the job's default is not applied here)."""
    # TensorFlow loads in the worker processes only: the driver and the job's worker stay
    # light, so that each path's peak memory is its own.
    import keras
    import numpy as np

    from job.data import read_npz
    from job.model import get_model

    arrays = read_npz(DATA)
    train_images = arrays.x_train / 255  # the seed's scale_mnist_data: float64
    test_images = arrays.x_test / 255
    train_images, test_images = train_images[..., np.newaxis], test_images[..., np.newaxis]
    model = get_model(train_images[0].shape)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    seconds = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)

    model.fit(train_images, arrays.y_train, epochs=epochs, verbose=0, callbacks=[Timer()])
    _, accuracy = model.evaluate(test_images, arrays.y_test, verbose=0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "epoch_seconds": seconds,
        "test_accuracy": float(accuracy),
        "peak_rss_mb": peak_mb,
        "onednn": onednn_enabled(),
    }


def job_worker(args: list[str]) -> dict:
    """The job itself, through its CLI; figures come from its metrics report."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "job",
            "train",
            "--data",
            str(DATA),
            "--output-dir",
            f"{tmp}/run",
            "--export-dir",
            f"{tmp}/models",
            *args,
        ]
        subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
        report = json.loads(Path(f"{tmp}/run/metrics.json").read_text())
        out = {
            "epoch_seconds": report["timings"]["epoch_seconds"],
            "train_seconds": report["timings"]["train_seconds"],
            "test_accuracy": report["test"]["accuracy"],
            "epochs_run": len(report["training"]["history"]),
            "train_examples": report["data"]["train_examples"],
            "onednn": report["environment"]["onednn"],
            # the worker's only child is the job, so this is the job's own peak
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        }
        if report["artifacts"]["export"]:
            out["inference"] = inference_figures(Path(report["artifacts"]["export"]))
        return out


def inference_figures(version_dir: Path) -> dict:
    """In-process latency and throughput of the exported serving_default signature."""
    import numpy as np  # in the worker (see seed_worker)
    import tensorflow as tf

    from job.data import read_npz

    serve = tf.saved_model.load(str(version_dir)).signatures[c.SIGNATURE_PIXELS]
    images = read_npz(DATA).x_test

    def call(batch):
        return serve(**{c.INPUT_PIXELS: tf.constant(batch)})[c.OUTPUT_DIGIT].numpy()

    for _ in range(20):
        call(images[:1])
    latencies = []
    for i in range(300):
        start = time.perf_counter()
        call(images[i : i + 1])
        latencies.append(time.perf_counter() - start)
    out = {
        "p50_ms": float(np.percentile(latencies, 50) * 1e3),
        "p99_ms": float(np.percentile(latencies, 99) * 1e3),
        "images_per_second": {},
    }
    for batch in (1, 32, 1024):
        call(images[:batch])
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < 2.0:
            offset = (count * batch) % (len(images) - batch)
            call(images[offset : offset + batch])
            count += 1
        out["images_per_second"][str(batch)] = count * batch / (time.perf_counter() - start)
    return out


# --------------------------------------------------------------------------- driver


def run_worker(kind: str, *args: str) -> dict:
    """Run one measurement in a fresh process."""
    cmd = [sys.executable, __file__, "--worker", kind, "--", *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    if done.returncode != 0:
        sys.exit(f"bench worker {kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def steady_epochs(seconds: list[float]) -> list[float]:
    """Epoch times without the first (tracing and compilation) when there are more."""
    return seconds[1:] if len(seconds) > 1 else seconds


def machine() -> str:
    """The lines that say where the figures came from: cores, CPU model, vector features."""
    cpu = cpu_description()
    features = cpu["vector_features"]
    kind = "AVX-512" if any(f.startswith("avx512") for f in features) else "no AVX-512"
    kind += ", AMX" if any(f.startswith("amx") for f in features) else ", no AMX"
    return (
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"TensorFlow {metadata.version('tensorflow')}\n"
        f"cpu: {cpu['model']} ({kind}): {' '.join(features) or 'no vector features listed'}"
    )


def onednn_line(runs: dict[str, list[dict]]) -> str:
    def state(results: list[dict]) -> str:
        values = {r["onednn"] for r in results}
        return "/".join({True: "on", False: "off", None: "unknown"}[v] for v in values)

    given = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    why = f"TF_ENABLE_ONEDNN_OPTS={given} here" if given else "TensorFlow's own choice"
    return f"oneDNN: notebook {state(runs['seed'])} ({why}), job {state(runs['job'])}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each path")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run")
    parser.add_argument(
        "--fast-runs", type=int, default=8, help="runs of --recipe fast, at random seeds"
    )
    parser.add_argument(
        "--fast-seeds",
        type=lambda text: [int(s) for s in text.split(",")],
        help="comma-separated seeds for --recipe fast instead of random ones",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 repeat, 2 epochs, 1 fast run, no scaling"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("worker_args", nargs="*", help=argparse.SUPPRESS)
    return parser.parse_args()


def training_table(repeats: int, epochs: int) -> float:
    """The notebook's path against the job's, alternating; returns the notebook's median
    training seconds."""
    runs: dict[str, list[dict]] = {"seed": [], "job": []}
    for _ in range(repeats):
        runs["seed"].append(run_worker("seed", str(epochs)))
        runs["job"].append(run_worker("job", "--epochs", str(epochs), "--no-export"))
    rows = {}
    for name, results in runs.items():
        epoch_s = statistics.median(s for r in results for s in steady_epochs(r["epoch_seconds"]))
        rows[name] = {
            "s/epoch": epoch_s,
            "examples/s": 60000 / epoch_s,
            "peak MB": max(r["peak_rss_mb"] for r in results),
            "test acc": statistics.mean(r["test_accuracy"] for r in results),
        }
    print(onednn_line(runs))
    header = f"{'path':<34}{'s/epoch':>9}{'examples/s':>12}{'peak MB':>9}{'test acc':>10}"
    print(header)
    labels = {"seed": "(a) seed notebook (float64, fit)", "job": "(b) job, default recipe"}
    for name, row in rows.items():
        print(
            f"{labels[name]:<34}{row['s/epoch']:>9.2f}{row['examples/s']:>12.0f}"
            f"{row['peak MB']:>9.0f}{row['test acc']:>10.4f}"
        )
    ratio = rows["job"]["examples/s"] / rows["seed"]["examples/s"]
    print(f"ratio (b)/(a) in examples per second: {ratio:.2f}x\n")
    return statistics.median(sum(r["epoch_seconds"]) for r in runs["seed"])


def fast_recipe(seeds: list[int], seed_time: float, epochs: int) -> dict:
    """``--recipe fast`` at ``seeds``, against the notebook's training time; returns the
    inference figures of the first run's export."""
    fast_runs = [
        run_worker(
            "job", "--recipe", "fast", "--seed", str(seed), *([] if i == 0 else ["--no-export"])
        )
        for i, seed in enumerate(seeds)
    ]
    print(f"--recipe fast (batch 128), {len(seeds)} runs at random seeds {seeds}:")
    for seed, run in zip(seeds, fast_runs, strict=True):
        print(
            f"  seed {seed}: test accuracy {run['test_accuracy']:.4f} after {run['epochs_run']} "
            f"epochs, {run['train_seconds']:.1f} s of training (wall time, first epoch included)"
        )
    accuracies = [r["test_accuracy"] for r in fast_runs]
    fast_time = statistics.median(r["train_seconds"] for r in fast_runs)
    print(
        f"  min {min(accuracies):.4f}, mean {statistics.mean(accuracies):.4f} test accuracy; "
        f"median training {fast_time:.1f} s = {fast_time / seed_time:.2f}x the notebook's "
        f"{epochs}-epoch training ({seed_time:.1f} s)"
    )
    return fast_runs[0]["inference"]


def scaling_table() -> None:
    print("\nscaling (job, default recipe, second epoch):")
    print(f"{'train images':>13}{'s/epoch':>9}{'us/image':>10}")
    for limit in (7500, 15000, 30000, 60000):
        result = run_worker("job", "--limit", str(limit), "--epochs", "2", "--no-export")
        seconds = result["epoch_seconds"][-1]
        print(f"{limit:>13}{seconds:>9.2f}{seconds / limit * 1e6:>10.1f}")


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    if args.worker:
        seed_run = args.worker == "seed"
        result = seed_worker(int(args.worker_args[0])) if seed_run else job_worker(args.worker_args)
        print(json.dumps(result))
        return
    if not DATA.exists():
        sys.exit(f"{DATA} is missing: run `make data` first")
    repeats, epochs = (1, 2) if args.quick else (args.repeats, args.epochs)
    print(machine())
    print(f"training: {repeats} alternating runs of each path, {epochs} epochs, batch 32\n")
    seed_time = training_table(repeats, epochs)
    # Seeds drawn afresh from the OS's randomness in every run, from 1000 up: never the
    # seeds the recipe was tuned on (all under 1000).
    fast_runs = 1 if args.quick else args.fast_runs
    seeds = args.fast_seeds or secrets.SystemRandom().sample(range(1000, 1_000_000), fast_runs)
    inference = fast_recipe(seeds, seed_time, epochs)
    print(
        f"inference (exported SavedModel, serving_default, in process): one image p50 "
        f"{inference['p50_ms']:.2f} ms, p99 {inference['p99_ms']:.2f} ms"
    )
    for batch, rate in inference["images_per_second"].items():
        print(f"  batch {batch:>5}: {rate:>9.0f} images/s")
    if not args.quick:
        scaling_table()


if __name__ == "__main__":
    main()
