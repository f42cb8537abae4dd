"""Input pipeline and optimizer recipes (small, in process)."""

import numpy as np
import pytest

from job.config import DEFAULT_RECIPE, FAST_RECIPE
from job.train import make_dataset, make_optimizer, split_validation


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


def test_default_recipe_is_adam_with_defaults():
    optimizer = make_optimizer(DEFAULT_RECIPE, steps_per_epoch=100, epochs=5)
    assert float(optimizer.learning_rate) == pytest.approx(0.001)


def test_fast_recipe_warms_up_then_decays():
    optimizer = make_optimizer(FAST_RECIPE, steps_per_epoch=100, epochs=10)
    schedule = optimizer._learning_rate
    rates = [float(schedule(step)) for step in (0, 50, 100, 500, 1000)]
    assert rates[0] < rates[1] < rates[2] == pytest.approx(FAST_RECIPE.peak_learning_rate)
    assert rates[2] > rates[3] > rates[4] >= 0
