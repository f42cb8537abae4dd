"""Run by make test-serving-compat with the previous TensorFlow (.venv-tf220), outside the
project's packages: load an export and answer every signature on the inputs given.

    .venv-tf220/bin/python tests/serving_compat.py EXPORT_DIR INPUTS.npz OUTPUTS.npz
"""

import sys

import numpy as np
import tensorflow as tf

export, given, answers = sys.argv[1:4]
signatures = tf.saved_model.load(export).signatures
inputs = np.load(given)
outputs = {"tensorflow": np.array(tf.__version__)}
for name in signatures:
    key = "image_bytes" if name == "predict_image" else "images"
    for output, value in signatures[name](**{key: tf.constant(inputs[name])}).items():
        outputs[f"{name}/{output}"] = value.numpy()
np.savez(answers, **outputs)
