"""Input pipeline, thread settings and optimizer recipes (small)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from job.config import DEFAULT_RECIPE, FAST_RECIPE
from job.model import compile_model, get_model
from job.training.devices import batch_shards
from job.training.inputs import batches, make_dataset, random_shifts, split_validation
from job.training.loop import Trainer, train_model
from job.training.optimizer import (
    FUSED_UPDATE,
    KERAS_UPDATE,
    fused_adam_kernel_works,
    make_optimizer,
    with_fused_adam_kernel,
)
from tests.conftest import make_arrays


def test_split_validation_holds_out_the_tail():
    x, y = np.arange(100).reshape(100, 1), np.arange(100)
    (x_fit, y_fit), (x_val, y_val) = split_validation(x, y, 0.2)
    assert len(x_fit) == 80 and y_val.tolist() == list(range(80, 100))
    assert split_validation(x, y, 0.0)[1] is None


def test_dataset_reshuffles_every_epoch_and_keeps_every_example():
    images = np.arange(64, dtype=np.float32).reshape(64, 1, 1, 1)
    ds = make_dataset(images, np.arange(64), batch_size=8, shuffle_seed=3)
    epochs = [np.concatenate([y.numpy() for _, y in ds]) for _ in range(2)]
    assert sorted(epochs[0].tolist()) == list(range(64))
    assert epochs[0].tolist() != epochs[1].tolist()
    for x, y in ds.take(1):  # images travel with their labels
        np.testing.assert_array_equal(x.numpy().reshape(-1), y.numpy())


def test_dataset_keeps_a_short_last_batch_and_knows_its_length():
    images = np.arange(70, dtype=np.float32).reshape(70, 1, 1, 1)
    ds = make_dataset(images, np.arange(70), batch_size=8, shuffle_seed=1)
    assert int(ds.cardinality()) == 9  # Keras sizes epochs from this
    sizes = [len(y) for _, y in ds]
    assert sizes == [8] * 8 + [6]
    assert sorted(np.concatenate([y.numpy() for _, y in ds]).tolist()) == list(range(70))


def test_repeated_dataset_still_reshuffles_every_epoch():
    # train_model fits on make_dataset(...).repeat() so that Keras keeps one iterator.
    ds = make_dataset(np.zeros((40, 1, 1, 1), np.float32), np.arange(40), 8, shuffle_seed=5)
    assert batches(ds) == 5
    labels = np.concatenate([y.numpy() for _, y in ds.repeat().take(3 * 5)])
    epochs = labels.reshape(3, 40)
    assert all(sorted(e.tolist()) == list(range(40)) for e in epochs)
    assert len({tuple(e.tolist()) for e in epochs}) == 3


def test_dataset_order_follows_the_seed():
    images = np.zeros((50, 1, 1, 1), np.float32)

    def first_epoch(seed):
        ds = make_dataset(images, np.arange(50), batch_size=10, shuffle_seed=seed)
        return np.concatenate([y.numpy() for _, y in ds]).tolist()

    assert first_epoch(7) == first_epoch(7)
    assert first_epoch(7) != first_epoch(8)


THREADS_PROBE = """
import json, os, tensorflow as tf
from job.training.devices import configure_threads
configure_threads({used!r}, os.environ)
print(json.dumps([tf.config.threading.get_intra_op_parallelism_threads(),
                  tf.config.threading.get_inter_op_parallelism_threads()]))
"""


@pytest.mark.parametrize(
    ("used", "env", "expected"),
    [
        ("cpu", {}, [1, os.cpu_count()]),  # one thread per op, ops side by side
        ("cpu", {"TF_NUM_INTRAOP_THREADS": "3"}, [3, os.cpu_count()]),  # the user's wins
        ("gpu", {}, [0, 0]),  # TensorFlow's defaults
    ],
)
def test_thread_settings(used, env, expected):
    # Thread pools are fixed when TensorFlow's runtime starts: probe in a fresh process.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TF_NUM_")}
    done = subprocess.run(
        [sys.executable, "-c", THREADS_PROBE.format(used=used)],
        env={**clean, **env, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == expected


def test_default_recipe_is_adam_with_defaults():
    optimizer, update = make_optimizer(DEFAULT_RECIPE, steps_per_epoch=100, epochs=5)
    defaults = keras.optimizers.Adam()
    assert type(optimizer) is keras.optimizers.Adam
    assert float(optimizer.learning_rate) == pytest.approx(0.001)
    for name in ("beta_1", "beta_2", "epsilon", "amsgrad", "weight_decay", "clipnorm"):
        assert getattr(optimizer, name) == getattr(defaults, name), name
    assert update == FUSED_UPDATE
    assert make_optimizer(DEFAULT_RECIPE, 100, 5, fused=False)[1] == KERAS_UPDATE


def test_fast_recipe_settings():
    assert (FAST_RECIPE.batch_size, FAST_RECIPE.epochs) == (128, 20)
    assert FAST_RECIPE.warmup_cosine and FAST_RECIPE.peak_learning_rate == 0.005
    assert FAST_RECIPE.translate_pixels == 2
    assert FAST_RECIPE.weight_decay == 0.05
    assert make_optimizer(FAST_RECIPE, 100, 10)[0].weight_decay == 0.05
    assert DEFAULT_RECIPE.weight_decay is None  # the seed's Adam has none


def _adam_twins(jit_compile="auto", **adam_args) -> list[keras.Model]:
    """Keras' Adam update in the first twin, the fused kernel in the second."""
    return _twins(
        keras.optimizers.Adam(**adam_args),
        with_fused_adam_kernel(keras.optimizers.Adam(**adam_args)),
        jit_compile=jit_compile,
    )


@pytest.mark.parametrize(
    "adam_args",
    [
        {},  # the default recipe: the seed's Adam
        {"learning_rate": keras.optimizers.schedules.CosineDecay(0.005, 40), "weight_decay": 0.05},
    ],
)
def test_the_fused_adam_kernel_takes_keras_adams_steps(adam_args):
    images, labels = _small_set(96)
    models = _adam_twins(**adam_args)
    ops = []
    for model in models:
        step = tf.function(Trainer(model, tf.distribute.get_strategy()).replica_step)
        for start in range(0, 96, 32):  # three steps: Adam's bias correction changes each
            x, y = tf.constant(images[start : start + 32]), tf.constant(labels[start : start + 32])
            step(x, y)
        graph = step.get_concrete_function(x, y).graph
        ops.append({op.type for op in graph.get_operations()})
    assert "ResourceApplyAdam" not in ops[0] and "ResourceApplyAdam" in ops[1]
    # Rounding apart (the kernel orders its float32 operations its own way): a wrong bias
    # correction or a missed decay would be off by a good part of a step (lr 0.001-0.005).
    _assert_same_weights(*models, rtol=1e-5, atol=1e-5)
    assert int(models[1].optimizer.iterations) == 3


@pytest.mark.parametrize("mode", ["jit", "mixed_float16"])
def test_the_fused_adam_kernel_under_xla_and_mixed_precision(mode):
    """The GPU options' code paths, run on the CPU: XLA compiles the kernel into the step;
    under mixed precision Keras wraps the optimizer for loss scaling around it."""
    images, labels = _small_set(64)
    policy = keras.mixed_precision.global_policy()
    try:
        if mode == "mixed_float16":
            keras.mixed_precision.set_global_policy("mixed_float16")
        keras_adam, fused = _adam_twins(jit_compile=mode == "jit")
        for model in (keras_adam, fused):
            loop = Trainer(model, tf.distribute.get_strategy())
            iterator = loop.iterate(make_dataset(images, labels, 32))
            loop._train_steps(iterator, tf.constant(2, tf.int64))
        concrete = loop._train_steps.get_concrete_function(iterator, tf.constant(2, tf.int64))
        graph_def = concrete.graph.as_graph_def()
        ops = {node.op for fn in graph_def.library.function for node in fn.node_def}
        assert "ResourceApplyAdam" in ops  # the fused model's step (the last built)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    # float16 forward passes differ from run to run in the last bits; a wrong update would
    # differ by a whole step.
    _assert_same_weights(keras_adam, fused, rtol=1e-3, atol=1e-4)
    assert int(fused.optimizer.iterations) == 2


def test_a_model_trained_with_the_fused_kernel_saves_a_plain_adam(tmp_path):
    _, fused = _adam_twins()
    images, labels = _small_set(32)
    step = tf.function(Trainer(fused, tf.distribute.get_strategy()).replica_step)
    step(tf.constant(images), tf.constant(labels))
    fused.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    assert type(loaded.optimizer) is keras.optimizers.Adam  # loads without this project


def test_fast_recipe_warms_up_then_decays():
    optimizer, _ = make_optimizer(FAST_RECIPE, steps_per_epoch=100, epochs=10)
    schedule = optimizer._learning_rate
    rates = [float(schedule(step)) for step in (0, 50, 100, 500, 1000)]
    assert rates[0] < rates[1] < rates[2] == pytest.approx(FAST_RECIPE.peak_learning_rate)
    assert rates[2] > rates[3] > rates[4] >= 0


def _twins(*optimizers, jit_compile="auto") -> list[keras.Model]:
    """Compiled models with the same starting weights, one per optimizer."""
    twins = [
        compile_model(get_model((28, 28, 1)), optimizer, jit_compile=jit_compile)
        for optimizer in optimizers
    ]
    for twin in twins[1:]:
        twin.set_weights(twins[0].get_weights())
    return twins


def _twin_models(count: int) -> list[keras.Model]:
    """Plain SGD, whose step is proportional to the gradient: Adam's early steps hardly
    change when the gradient is scaled, so they would hide a loss divided by the wrong
    count."""
    return _twins(*(keras.optimizers.SGD(0.1) for _ in range(count)))


def _small_set(n: int) -> tuple[np.ndarray, np.ndarray]:
    arrays = make_arrays(n_train=n)
    return (arrays["x_train"] / 255).astype(np.float32)[..., None], arrays["y_train"]


def _assert_same_weights(a: keras.Model, b: keras.Model, rtol=1e-4, atol=1e-6) -> None:
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=rtol, atol=atol)


@pytest.mark.parametrize("batch", [32, 7])  # 7: the slices need one zero-weight pad example
def test_a_batch_cut_into_slices_takes_the_same_step(batch):
    images, labels = _small_set(batch)
    whole, sliced = _twin_models(2)
    sums = {}
    for name, model, shards in (("whole", whole, 1), ("sliced", sliced, 2)):
        step = tf.function(Trainer(model, tf.distribute.get_strategy(), shards).replica_step)
        sums[name] = step(tf.constant(images), tf.constant(labels.astype(np.int64))).numpy()
    np.testing.assert_allclose(sums["whole"], sums["sliced"], rtol=1e-5)
    assert sums["sliced"][2] == batch  # padding is not counted as an example
    _assert_same_weights(whole, sliced)


def test_the_job_loop_matches_keras_fit(tmp_path):
    """The job's loop takes the steps Keras' own fit takes, and reports the same curves."""
    images, labels = _small_set(200)
    (x_fit, y_fit), (x_val, y_val) = split_validation(images, labels, 0.2)
    with_fit, with_job = _twin_models(2)
    # The same batches for both: each dataset shuffles from the same seed.
    fitted = with_fit.fit(
        make_dataset(x_fit, y_fit, 32, shuffle_seed=4).repeat(),
        steps_per_epoch=5,
        epochs=2,
        validation_data=make_dataset(x_val, y_val, 32),
        shuffle=False,
        verbose=0,
    ).history
    train_ds, val_ds = (
        make_dataset(x_fit, y_fit, 32, shuffle_seed=4),
        make_dataset(x_val, y_val, 32),
    )
    result = train_model(with_job, train_ds, val_ds, 2, tmp_path)
    _assert_same_weights(with_fit, with_job)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        job_curve = [epoch[key] for epoch in result.history]
        assert job_curve == pytest.approx(fitted[key], rel=1e-4), key


def test_the_fused_kernel_is_checked_and_keras_update_runs_when_it_does_not_fit(
    monkeypatch, caplog
):
    apply_adam = tf.raw_ops.ResourceApplyAdam

    def longer_step(**kwargs):  # internals that changed meaning: a step twice as long
        return apply_adam(**{**kwargs, "lr": kwargs["lr"] * 2})

    def changed_signature(**kwargs):  # internals that are gone or renamed
        raise TypeError("ResourceApplyAdam() got an unexpected keyword argument 'm'")

    fused_adam_kernel_works.cache_clear()
    try:
        assert fused_adam_kernel_works()  # this Keras: the internals are there and agree
        for broken, logged in (
            (longer_step, "differs from Keras'"),
            (changed_signature, "TypeError"),
        ):
            fused_adam_kernel_works.cache_clear()
            monkeypatch.setattr(tf.raw_ops, "ResourceApplyAdam", broken)
            optimizer, update = make_optimizer(DEFAULT_RECIPE, 100, 5)
            assert update == KERAS_UPDATE and "update_step" not in vars(optimizer)
            assert logged in caplog.text and "Keras' update runs" in caplog.text
    finally:
        fused_adam_kernel_works.cache_clear()


def test_batch_shards_one_slice_per_inter_op_thread_on_cpu(monkeypatch):
    monkeypatch.setattr(tf.config.threading, "get_inter_op_parallelism_threads", lambda: 4)
    assert batch_shards("cpu", 128) == 4
    assert batch_shards("cpu", 32) == 2  # at least 16 examples a slice
    assert batch_shards("cpu", 8) == 1
    assert batch_shards("gpu", 128) == 1


def test_random_shifts_move_each_image_by_whole_pixels_and_fill_with_zeros():
    images = np.random.default_rng(0).uniform(0.1, 1, (64, 28, 28, 1)).astype(np.float32)
    shifted = random_shifts(tf.constant(images), 2, tf.constant([5, 6], tf.int64)).numpy()
    offsets = []
    for original, moved in zip(images, shifted, strict=True):
        padded = np.pad(original, ((2, 2), (2, 2), (0, 0)))
        found = [
            (dy - 2, dx - 2)
            for dy in range(5)
            for dx in range(5)
            if np.array_equal(padded[dy : dy + 28, dx : dx + 28], moved)
        ]
        assert len(found) == 1  # exactly one whole-pixel shift explains it; the rest is zeros
        offsets.append(found[0])
    assert len(set(offsets)) > 10  # each image draws its own shift
    again = random_shifts(tf.constant(images), 2, tf.constant([5, 6], tf.int64)).numpy()
    np.testing.assert_array_equal(shifted, again)  # stateless: the seed decides


def test_shifted_batches_follow_the_seed_and_keep_their_labels():
    arrays = make_arrays(n_train=96)
    images = (arrays["x_train"] / 255).astype(np.float32)[..., None]

    def first_epoch(seed):
        ds = make_dataset(images, arrays["y_train"], 32, shuffle_seed=seed, translate_pixels=2)
        return [(x.numpy(), y.numpy()) for x, y in ds]

    one, same, other = first_epoch(1), first_epoch(1), first_epoch(2)
    for (x1, y1), (x2, y2) in zip(one, same, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(one[0][0], other[0][0])
    labels = np.concatenate([y for _, y in one])
    assert sorted(labels.tolist()) == sorted(arrays["y_train"].tolist())
    with pytest.raises(ValueError, match="shuffle seed"):
        make_dataset(images, arrays["y_train"], 32, translate_pixels=2)
