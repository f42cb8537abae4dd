"""Where the default recipe's training step spends its time, op by op.

    .venv/bin/python bench/profile.py [--chunks 5]
    .venv/bin/python bench/profile.py --compare 60   # no profile: A/B of the step's mechanisms

Builds the job's own loop as ``python -m job train`` does (batch 32, the default recipe's
optimizer, one slice per core, the job's steps per call), warms it up, times 20 calls, then
records ``--chunks`` more with TensorFlow's profiler and prints the time of each kernel per
step, summed over all threads (two threads busy for 1 µs count 2 µs). ``--compare``
alternates the job's step with the step without one of its mechanisms, call by call in one
process, so that a shared machine's load hits them alike. A script, not a test.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import tempfile
import time
from pathlib import Path

from job.config import DEFAULT_RECIPE, DEFAULT_STEPS_PER_EXECUTION
from job.cpu import enable_onednn_by_default, onednn_enabled

REPO = Path(__file__).resolve().parents[1]
DATA = (
    Path(os.environ.get("MNIST_JOB_CACHE_DIR", Path.home() / ".cache" / "mnist-job")) / "mnist.npz"
)
# The profiler's own spans (the call, the executor, tf.data's iterators), not kernels.
NOT_KERNELS = {
    "Process", "Run", "Root", "Start", "Done", "DoCompute", "FunctionRun", "Map", "FlatMap",
    "Prefetch", "ForeverRepeat", "AssertCardinality", "RunWithBorrowedArgs", "tf.constant",
    "ValidateInputTypeAndPlacement", "FiniteTake",
}  # fmt: skip


def kernel_times(logdir: str) -> collections.Counter:
    """Microseconds per kernel name, summed over the trace's events."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals: collections.Counter = collections.Counter()
    for path in Path(logdir).rglob("*.xplane.pb"):
        space = xplane_pb2.XSpace()
        space.ParseFromString(path.read_bytes())
        for plane in space.planes:
            names = {key: meta.name for key, meta in plane.event_metadata.items()}
            for line in plane.lines:
                for event in line.events:
                    name = names.get(event.metadata_id, "?").split(":")[-1].strip()
                    totals[name] += event.duration_ps / 1e6
    return totals


def is_kernel(name: str) -> bool:
    return (
        name not in NOT_KERNELS
        and not name.startswith(("_train_steps", "__inference", "TFE_", "Eager"))
        and not name.endswith(("Produce", "Consume", "Callback", "Dataset", "DatasetV2"))
    )


def build_loop(images, labels, keras_adam: bool, whole_batches: bool):
    """The job's loop as ``python -m job train`` builds it, or with one mechanism taken out;
    returns a function that runs ``count`` calls of the job's steps per call."""
    # Imported here, after main() asked for oneDNN: TensorFlow reads that once, as it loads.
    import keras
    import tensorflow as tf

    from job import model
    from job.training import devices, inputs, optimizer
    from job.training.loop import Trainer

    batch, chunk = DEFAULT_RECIPE.batch_size, DEFAULT_STEPS_PER_EXECUTION
    train_ds = inputs.make_dataset(images, labels, batch, shuffle_seed=1)
    steps_per_epoch = inputs.batches(train_ds)
    adam, _ = optimizer.make_optimizer(DEFAULT_RECIPE, steps_per_epoch, DEFAULT_RECIPE.epochs)
    net = model.get_model(images.shape[1:])
    model.compile_model(
        net, keras.optimizers.Adam() if keras_adam else adam, steps_per_execution=chunk
    )
    shards = 1 if whole_batches else devices.batch_shards("cpu", batch)
    loop = Trainer(net, tf.distribute.get_strategy(), shards)
    iterator = loop.iterate(train_ds)

    def chunks(count: int) -> None:
        for _ in range(count):
            loop._train_steps(iterator, tf.constant(chunk, tf.int64)).numpy()

    chunks(5)  # tracing and warm-up
    return chunks


def compare(variants: dict, rounds: int) -> None:
    """Alternate the variants call by call, so that a shared machine's load hits them alike;
    print the median time per step of each against the first."""
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, chunks in variants.items():
            start = time.perf_counter()
            chunks(1)
            seconds[name].append((time.perf_counter() - start) / DEFAULT_STEPS_PER_EXECUTION)
    base = statistics.median(next(iter(seconds.values())))
    print(f"{'variant':<40}{'µs/step':>9}{'vs first':>10}  (median of {rounds} alternating calls)")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:<40}{median * 1e6:>9.0f}{median / base:>9.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=5, help="calls into TensorFlow traced")
    parser.add_argument("--top", type=int, default=16, help="kernels listed")
    parser.add_argument(
        "--compare",
        type=int,
        metavar="ROUNDS",
        help="no profile: alternate the job's step with Keras' Adam update and with whole "
        "batches, ROUNDS calls each, and print their times per step",
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    enable_onednn_by_default()  # as the job's CLI does, before TensorFlow loads
    import tensorflow as tf  # noqa: I001 - only now (see build_loop)

    from job.data import add_channel_axis, read_npz, scale_mnist_data
    from job.training import devices

    devices.configure_threads(devices.select_device("cpu"), os.environ)
    arrays = read_npz(DATA)
    images = add_channel_axis(scale_mnist_data(arrays.x_train, arrays.x_test)[0])
    onednn = {True: "on", False: "off", None: "unknown"}[onednn_enabled()]
    print(f"oneDNN {onednn}, {devices.batch_shards('cpu', 32)} slices per batch of 32")
    if args.compare:
        variants = {
            "as shipped": (False, False),
            "Keras' Adam update (no fused kernel)": (True, False),
            "whole batches (no slices; same threads)": (False, True),
        }
        loops = {name: build_loop(images, arrays.y_train, *how) for name, how in variants.items()}
        return compare(loops, args.compare)
    chunks = build_loop(images, arrays.y_train, keras_adam=False, whole_batches=False)
    start = time.perf_counter()
    chunks(20)
    step_us = (time.perf_counter() - start) / (20 * DEFAULT_STEPS_PER_EXECUTION) * 1e6
    print(f"{step_us:.0f} µs per step (wall, untraced)")
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        chunks(args.chunks)
        tf.profiler.experimental.stop()
        totals = kernel_times(logdir)
    kernels = {n: us / (args.chunks * DEFAULT_STEPS_PER_EXECUTION) for n, us in totals.items()}
    kernels = {name: us for name, us in kernels.items() if is_kernel(name)}
    print(f"kernel time per step, all threads: {sum(kernels.values()):.0f} µs")
    print(f"{'kernel':<44}{'µs/step':>9}")
    for name, us in sorted(kernels.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{name:<44}{us:>9.1f}")


if __name__ == "__main__":
    main()
