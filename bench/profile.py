"""Where the default recipe's training step spends its time, op by op.

    .venv/bin/python bench/profile.py [--chunks 5]

Builds the job's own loop as ``python -m job train`` does (batch 32, the default recipe's
optimizer, one slice per core, the job's steps per call), warms it up, times 20 calls, then
records ``--chunks`` more with TensorFlow's profiler and prints the time of each kernel per
step, summed over all threads (two threads busy for 1 µs count 2 µs). A script, not a test.
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=5, help="calls into TensorFlow traced")
    parser.add_argument("--top", type=int, default=16, help="kernels listed")
    parser.add_argument(
        "--keras-adam",
        action="store_true",
        help="Keras' own Adam update_step instead of the fused kernel the job uses",
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from job.cpu import enable_onednn_by_default, onednn_enabled

    enable_onednn_by_default()  # as the job's CLI does, before TensorFlow loads
    import keras
    import tensorflow as tf

    from job import model
    from job.config import DEFAULT_RECIPE, DEFAULT_STEPS_PER_EXECUTION
    from job.data import add_channel_axis, read_npz, scale_mnist_data
    from job.training import devices, inputs, optimizer
    from job.training.loop import Trainer

    chunk = DEFAULT_STEPS_PER_EXECUTION  # steps per call, as the job runs them
    used = devices.select_device("cpu")
    devices.configure_threads(used, os.environ)
    arrays = read_npz(DATA)
    images = add_channel_axis(scale_mnist_data(arrays.x_train, arrays.x_test)[0])
    batch = DEFAULT_RECIPE.batch_size
    train_ds = inputs.make_dataset(images, arrays.y_train, batch, shuffle_seed=1)
    net = model.get_model(images.shape[1:])
    steps_per_epoch = inputs.steps_per_epoch(len(images), batch)
    model.compile_model(
        net,
        optimizer=keras.optimizers.Adam()
        if args.keras_adam
        else optimizer.make_optimizer(DEFAULT_RECIPE, steps_per_epoch, DEFAULT_RECIPE.epochs)[0],
        steps_per_execution=chunk,
    )
    shards = devices.batch_shards(used, batch)
    loop = Trainer(net, tf.distribute.get_strategy(), shards)
    iterator = loop.iterate(train_ds)

    def chunks(count: int) -> None:
        for _ in range(count):
            loop._train_steps(iterator, tf.constant(chunk, tf.int64)).numpy()

    chunks(5)  # tracing and warm-up
    start = time.perf_counter()
    chunks(20)
    step_us = (time.perf_counter() - start) / (20 * chunk) * 1e6
    adam = "Keras' Adam update" if args.keras_adam else "fused Adam kernel"
    onednn = {True: "on", False: "off", None: "unknown"}[onednn_enabled()]
    print(
        f"batch {batch}, {shards} slices, {adam}, oneDNN {onednn}: "
        f"{step_us:.0f} µs per step (wall, untraced)"
    )
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        chunks(args.chunks)
        tf.profiler.experimental.stop()
        totals = kernel_times(logdir)
    steps = args.chunks * chunk
    kernels = {name: us / steps for name, us in totals.items() if is_kernel(name)}
    print(f"kernel time per step, all threads: {sum(kernels.values()):.0f} µs")
    print(f"{'kernel':<44}{'µs/step':>9}")
    for name, us in sorted(kernels.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{name:<44}{us:>9.1f}")


if __name__ == "__main__":
    main()
