"""The model is exactly the seed's spec."""

import keras
import pytest

from job.model import compile_model, get_model


@pytest.fixture(scope="module")
def model():
    return compile_model(get_model((28, 28, 1)))


def test_six_layers_in_the_seed_order(model):
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense", "Dense"]
    assert isinstance(model, keras.Sequential)


def test_layer_settings(model):
    conv, pool, _, d1, d2, out = model.layers
    assert conv.filters == 8 and conv.kernel_size == (3, 3)
    assert conv.padding == "same" and conv.activation.__name__ == "relu"
    assert pool.pool_size == (2, 2) and pool.strides == (2, 2)
    assert [d.units for d in (d1, d2, out)] == [64, 64, 10]
    assert [d.activation.__name__ for d in (d1, d2, out)] == ["relu", "relu", "softmax"]


def test_shapes_and_parameter_count(model):
    assert model.input_shape == (None, 28, 28, 1)
    shapes = [tuple(layer.output.shape) for layer in model.layers]
    assert shapes == [
        (None, 28, 28, 8),
        (None, 14, 14, 8),
        (None, 1568),
        (None, 64),
        (None, 64),
        (None, 10),
    ]
    assert model.count_params() == 105_306


def test_compiled_as_the_seed(model):
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.Adam)
    defaults = keras.optimizers.Adam()
    assert float(optimizer.learning_rate) == pytest.approx(float(defaults.learning_rate))
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (
        defaults.beta_1,
        defaults.beta_2,
        defaults.epsilon,
    )
    assert model.loss == "sparse_categorical_crossentropy"
    assert "accuracy" in [m for m in model._compile_config.config["metrics"]]
