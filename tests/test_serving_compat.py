"""The export on the previous TensorFlow release (make test-serving-compat; not in make test).

TF Serving's images trail TensorFlow's releases (tensorflow/serving#4129), so `make serve`
names tensorflow/serving:2.20.0 as its fallback. This tier loads the export with
tensorflow==2.20.0 (the runtime of that image) in .venv-tf220 and checks that all three
signatures give exactly the answers they give on the job's TensorFlow.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import tensorflow as tf

from job.export import contract as c
from tests.conftest import REPO

pytestmark = pytest.mark.compat
PREVIOUS = REPO / ".venv-tf220" / "bin" / "python"


def test_the_previous_tensorflow_answers_every_signature_identically(trained_run, mnist, tmp_path):
    if not PREVIOUS.exists():
        pytest.fail("no .venv-tf220: run make test-serving-compat")
    images = mnist.x_test[:64]
    pngs = np.array([tf.io.encode_png(image[..., None]).numpy() for image in images[:16]])
    given = {
        c.SIGNATURE_PIXELS: images,
        c.SIGNATURE_PIXELS_FLOAT: images.astype(np.float32),
        c.SIGNATURE_IMAGE_BYTES: pngs,
    }
    np.savez(tmp_path / "inputs.npz", **given)
    export = str(trained_run["version_dir"])
    done = subprocess.run(
        [PREVIOUS, REPO / "tests/serving_compat.py", export, tmp_path / "inputs.npz",
         tmp_path / "answers.npz"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    answers = np.load(tmp_path / "answers.npz")
    assert str(answers["tensorflow"]) == "2.20.0"
    signatures = tf.saved_model.load(export).signatures
    for name, values in given.items():
        key = c.INPUT_IMAGE_BYTES if name == c.SIGNATURE_IMAGE_BYTES else c.INPUT_PIXELS
        here = signatures[name](**{key: tf.constant(values)})
        for output in (c.OUTPUT_PROBABILITIES, c.OUTPUT_DIGIT):
            np.testing.assert_array_equal(answers[f"{name}/{output}"], here[output].numpy())
