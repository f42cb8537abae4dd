"""The seed's CNN: get_model(input_shape) and compile_model(model), exactly to its spec."""

import keras
from keras.layers import Conv2D, Dense, Flatten, MaxPooling2D


def get_model(input_shape: tuple[int, ...]) -> keras.Sequential:
    """The seed's six-layer CNN. ``keras.Input`` is no layer (Keras 3 warns on ``input_shape=``);
    the softmax computes in float32 even under a mixed_float16 policy."""
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
    """Compile in place as the seed does: Adam, sparse categorical cross-entropy, accuracy."""
    model.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
        jit_compile=jit_compile,
    )
    return model
