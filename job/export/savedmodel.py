"""Write the SavedModel into a numbered version folder, atomically, with warm-up requests,
the run's record and the model card."""

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from job.errors import JobError, OutputError
from job.export import contract as c
from job.export.model_card import write_card
from job.export.signatures import build_archive
from job.export.versions import check_version_free, rename_into_version
from job.files import default_mode, write_json_atomic

log = logging.getLogger(__name__)


def write_warmup_requests(path: Path) -> None:
    """TFRecord of PredictionLog that TF Serving replays at load, so request one is not slow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch in (1, 32):
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
    model: keras.Model,
    export_dir: Path,
    version: int | None = None,
    run_info: dict | None = None,
    model_card: dict | None = None,
) -> Path:
    """Write ``<export_dir>/<version>/`` (default: the next free one) as a hidden sibling renamed
    into place: a server polling ``export_dir`` never sees half a model (docs/serving.md).

    Raises:
        JobError: ``version`` exists (it is never replaced), or ``export_dir`` cannot be made.
        OutputError: writing the export failed (a full disk, say); nothing is left.
    """
    if version is not None:
        check_version_free(export_dir, version)
    try:
        export_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version or 'next'}-", dir=export_dir))
    except OSError as exc:
        raise JobError(f"{export_dir}: cannot write the export ({exc.strerror})") from None
    try:
        build_archive(model).write_out(str(tmp), verbose=False)
        extra = tmp / "assets.extra"
        write_warmup_requests(extra / c.WARMUP_FILE)
        if run_info is not None:
            write_json_atomic(extra / c.RUN_INFO_FILE, run_info)
        if model_card is not None:
            write_card(extra, model_card)
        os.chmod(tmp, default_mode(directory=True))  # mkdtemp's 0700 locks the server out
        final = rename_into_version(tmp, export_dir, version)
    except OSError as exc:
        reason = exc.strerror or exc
        raise OutputError(f"{export_dir}: cannot write the export ({reason})") from None
    except tf.errors.OpError as exc:
        # SaveV2 reports a full disk as ResourceExhausted: "...part-00000...; No space left on
        # device [Op:SaveV2]" -> "No space left on device", without the op's names and paths.
        text = (exc.message or type(exc).__name__).splitlines()[0]
        reason = re.sub(r"\s*\[Op:\w+\]$", "", text).rsplit("; ", 1)[-1].strip()
        raise OutputError(f"{export_dir}: cannot write the export ({reason})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported SavedModel version %s to %s", final.name, final)
    return final
