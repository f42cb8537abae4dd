"""SavedModel for TensorFlow Serving: explicit signatures, a numbered version folder, warm-up.

The signatures are built by hand with ``keras.export.ExportArchive`` rather than
``model.export``: Keras 3 renames inputs and outputs when it picks them itself
(keras-team/keras#19458: ``inputs``, ``output_0``), and ``model.export`` with several outputs
and an input signature has failed before (keras-team/keras#21258). Names come from
``serving.contract`` so the clients and this exporter cannot disagree.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from job.errors import JobError
from job.files import default_mode, write_json_atomic
from serving import contract as c

log = logging.getLogger(__name__)

VERSION_DIR = re.compile(r"^\d+$")


def existing_versions(export_dir: Path) -> list[int]:
    if not export_dir.is_dir():
        return []
    return sorted(int(p.name) for p in export_dir.iterdir() if VERSION_DIR.match(p.name))


def next_version(export_dir: Path) -> int:
    versions = existing_versions(export_dir)
    return versions[-1] + 1 if versions else 1


def _classify(model: keras.Model, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
    """Pixels [batch, 28, 28] in 0..255 -> the contract's outputs. Scaling lives here."""
    scaled = tf.cast(pixels, tf.float32) / 255.0
    probabilities = tf.cast(model(scaled[..., tf.newaxis], training=False), tf.float32)
    return {
        c.OUTPUT_PROBABILITIES: probabilities,
        c.OUTPUT_DIGIT: tf.argmax(probabilities, axis=1),
    }


def _decode_to_pixels(encoded: tf.Tensor) -> tf.Tensor:
    """PNG/JPEG/GIF/BMP bytes -> [28, 28] float32 grayscale 0..255; other sizes are resized."""
    image = tf.io.decode_image(encoded, channels=1, dtype=tf.uint8, expand_animations=False)
    image = tf.cast(image, tf.float32)
    size = tf.shape(image)[:2]
    image = tf.cond(
        tf.reduce_all(tf.equal(size, [c.IMAGE_SIZE, c.IMAGE_SIZE])),
        lambda: image,
        lambda: tf.image.resize(image, [c.IMAGE_SIZE, c.IMAGE_SIZE], antialias=True),
    )
    return tf.ensure_shape(image[..., 0], [c.IMAGE_SIZE, c.IMAGE_SIZE])


def build_archive(model: keras.Model) -> keras.export.ExportArchive:
    """The three serving signatures around ``model``."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    size = c.IMAGE_SIZE

    @tf.function(input_signature=[tf.TensorSpec([None, size, size], tf.uint8, c.INPUT_PIXELS)])
    def serve_pixels(images):
        return _classify(model, images)

    @tf.function(input_signature=[tf.TensorSpec([None, size, size], tf.float32, c.INPUT_PIXELS)])
    def serve_pixels_float(images):
        return _classify(model, images)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, c.INPUT_IMAGE_BYTES)])
    def serve_image_bytes(image_bytes):
        pixels = tf.map_fn(_decode_to_pixels, image_bytes, fn_output_signature=tf.float32)
        return _classify(model, pixels)

    archive.add_endpoint(c.SIGNATURE_PIXELS, serve_pixels)
    archive.add_endpoint(c.SIGNATURE_PIXELS_FLOAT, serve_pixels_float)
    archive.add_endpoint(c.SIGNATURE_IMAGE_BYTES, serve_image_bytes)
    return archive


def write_warmup_requests(path: Path, num_records: int = 4) -> None:
    """TFRecord of PredictionLog that TF Serving replays at load, so request one is not slow."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch in (1, 32)[: max(1, num_records)]:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=c.MODEL_NAME, signature_name=c.SIGNATURE_PIXELS)
            )
            pixels = np.zeros((batch, c.IMAGE_SIZE, c.IMAGE_SIZE), np.uint8)
            request.inputs[c.INPUT_PIXELS].CopyFrom(tf.make_tensor_proto(pixels))
            log_entry = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log_entry.SerializeToString())


def export_for_serving(
    model: keras.Model, export_dir: Path, version: int | None = None, run_info: dict | None = None
) -> Path:
    """Write ``<export_dir>/<version>/``: SavedModel, warm-up requests and the run's record.

    The model is written to a hidden temporary sibling (TF Serving only loads folders whose
    names are numbers) and renamed into place in one step, so a server polling
    ``export_dir`` never sees half a model. An existing version is never replaced.

    Raises:
        JobError: ``version`` already exists, or ``export_dir`` cannot be written.
    """
    version = version if version is not None else next_version(export_dir)
    if version < 1:
        raise JobError(f"--version must be a positive integer, got {version}")
    final = export_dir / str(version)
    if final.exists():
        raise JobError(f"{final}: version {version} already exists; it is never overwritten")
    try:
        export_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_dir))
    except OSError as exc:
        raise JobError(f"{export_dir}: cannot write the export ({exc.strerror})") from None
    try:
        build_archive(model).write_out(str(tmp), verbose=False)
        extra = tmp / "assets.extra"
        write_warmup_requests(extra / c.WARMUP_FILE)
        if run_info is not None:
            write_json_atomic(extra / c.RUN_INFO_FILE, run_info)
        os.chmod(tmp, default_mode(directory=True))  # mkdtemp's 0700 would lock the server out
        try:
            os.rename(tmp, final)  # atomic; fails rather than replace a non-empty folder
        except OSError:
            raise JobError(f"{final}: appeared while exporting; not overwritten") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported SavedModel version %d to %s", version, final)
    return final


def predict_with_export(version_dir: Path, images: np.ndarray, batch_size: int = 1024):
    """Reload an export with ``tf.saved_model.load`` and run serving_default on uint8 pixels.

    Returns:
        (probabilities [N, 10], digits [N]) as numpy arrays.
    """
    loaded = tf.saved_model.load(str(version_dir))
    serve = loaded.signatures[c.SIGNATURE_PIXELS]
    probs, digits = [], []
    for start in range(0, len(images), batch_size):
        out = serve(**{c.INPUT_PIXELS: tf.constant(images[start : start + batch_size])})
        probs.append(out[c.OUTPUT_PROBABILITIES].numpy())
        digits.append(out[c.OUTPUT_DIGIT].numpy())
    return np.concatenate(probs), np.concatenate(digits)
