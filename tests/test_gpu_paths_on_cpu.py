"""The GPU options' code paths, run on the CPU: mixed precision and XLA under every strategy
(one device, MirroredStrategy over two logical CPU devices, two workers), each a short run
that must learn, and one step on two workers that must take the same update with and
without mixed precision."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, free_port, make_arrays

pytestmark = pytest.mark.integration

# Splits the CPU into two logical devices before TensorFlow starts and mirrors over both,
# then runs the CLI: MirroredStrategy has two replicas, as on a machine with two GPUs.
TWO_CPU_DEVICES = """
import functools, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
tf.distribute.MirroredStrategy = functools.partial(tf.distribute.MirroredStrategy, cpus)
from job.cli import main
main(sys.argv[1:], prog_name="job")
"""


@pytest.fixture(scope="module")
def learnable_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, **make_arrays(n_train=1200, n_test=300))
    return path


def env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.mark.parametrize("distribute", ["none", "mirrored"])
@pytest.mark.parametrize("option", ["--mixed-precision", "--jit"])
def test_gpu_options_learn_under_every_single_machine_strategy(
    tmp_path, learnable_npz, distribute, option
):
    start = ["-c", TWO_CPU_DEVICES] if distribute == "mirrored" else ["-m", "job"]
    run_dir = tmp_path / "run"
    command = [sys.executable, *start, "train", "--data", str(learnable_npz), "--device", "cpu"]
    command += ["--distribute", distribute, "--epochs", "2", "--validation-split", "0.2"]
    command += ["--output-dir", str(run_dir), "--no-export", option]
    done = subprocess.run(command, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["distribution"]["replicas"] == (2 if distribute == "mirrored" else 1)
    policy = "mixed_float16" if option == "--mixed-precision" else "float32"
    assert report["environment"]["device"]["precision_policy"] == policy
    assert report["config"]["train"]["jit"] == (option == "--jit")
    history = report["training"]["history"]
    assert history[1]["loss"] < history[0]["loss"]  # it learns
    assert "val_loss" in history[1]  # the validation curves on every strategy
    assert report["test"]["accuracy"] > 0.9


# One step of SGD on two workers from the same weights, in float32 and in mixed_float16:
# SGD's step is proportional to the gradient, so a loss not scaled before the loss-scale
# optimizer unscales it would move the weights 32768 times too little. Seeded: the same
# weights and batch every time, so float16's rounding is the same every time.
ONE_STEP = """
import json
import keras, numpy as np, tensorflow as tf
from job.model import compile_model, get_model
from job.training.loop import Trainer
from tests.conftest import make_arrays

strategy = tf.distribute.MultiWorkerMirroredStrategy()
keras.utils.set_random_seed(0)
arrays = make_arrays(n_train=64)
images = (arrays["x_train"] / 255).astype(np.float32)[..., None]
batch = tf.data.Dataset.from_tensor_slices((images, arrays["y_train"].astype(np.int64))).batch(64)
start, moved = None, {}
for policy in ("float32", "mixed_float16"):
    keras.mixed_precision.set_global_policy(policy)
    with strategy.scope():
        net = compile_model(get_model((28, 28, 1)), keras.optimizers.SGD(0.1))
    start = start or net.get_weights()
    net.set_weights(start)
    trainer = Trainer(net, strategy)
    trainer._train_steps(trainer.iterate(batch), tf.constant(1, tf.int64))
    moved[policy] = [after - before for after, before in zip(net.get_weights(), start)]
print(json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "difference": float(  # of the two updates, over all weights, relative to float32's
        np.linalg.norm(np.concatenate([(m - f).ravel() for f, m in zip(*moved.values())]))
        / np.linalg.norm(np.concatenate([f.ravel() for f in moved["float32"]]))
    ),
}))
"""


def test_one_step_on_two_workers_is_the_same_with_mixed_precision():
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ONE_STEP],
            cwd=REPO,
            env={
                **env(),
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": i}}
                ),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [proc.communicate(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr[-3000:]
        result = json.loads(stdout.strip().splitlines()[-1])
        assert result["replicas"] == 2
        # float16 forward and backward passes round at about 1e-3 each; a missed loss scale
        # leaves the mixed update 32768 times too small, a difference of 1.
        assert result["difference"] < 0.05, result
