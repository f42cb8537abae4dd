"""The seed's CNN: get_model(input_shape) and compile_model(model), exactly to its spec."""

from __future__ import annotations

import keras
from keras.layers import Conv2D, Dense, Flatten, MaxPooling2D


def get_model(input_shape: tuple[int, ...]) -> keras.Sequential:
    """Build the seed's six-layer Sequential CNN.

    ``keras.Input`` carries the input shape into the first layer (Keras 3 warns on
    ``input_shape=`` in a layer) and is not itself a layer, so ``model.layers`` stays at six.
    The output layer computes in float32 so that the softmax stays in float32 under a
    mixed_float16 policy; under the default float32 policy this changes nothing.
    """
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            Conv2D(filters=8, kernel_size=3, padding="SAME", activation="relu"),
            MaxPooling2D((2, 2)),
            Flatten(),
            Dense(64, activation="relu"),
            Dense(64, activation="relu"),
            Dense(10, activation="softmax", dtype="float32"),
        ],
        name="mnist_cnn",
    )


def compile_model(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer | str = "adam",
    steps_per_execution: int = 1,
    jit_compile: bool | str = "auto",
) -> keras.Model:
    """Compile with Adam (default settings unless an optimizer is given), sparse categorical
    cross-entropy and accuracy, as the seed does. Returns the model, compiled in place."""
    model.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
        jit_compile=jit_compile,
    )
    return model
