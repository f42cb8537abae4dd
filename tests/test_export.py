"""The SavedModel export: version folders, signatures and names, warm-up, exact predictions."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from job.cli import main
from job.errors import JobError, OutputError
from job.export import contract as c
from job.export import savedmodel as export
from job.export import versions
from job.report import RUN_RECORD, run_record
from tests.conftest import predict_with_export

pytestmark = pytest.mark.integration


def test_saved_model_cli_shows_both_signatures_with_named_outputs(trained_run):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run(
        [cli, "show", "--all", "--dir", str(trained_run["version_dir"])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for signature in (c.SIGNATURE_PIXELS, c.SIGNATURE_PIXELS_FLOAT, c.SIGNATURE_IMAGE_BYTES):
        assert f"signature_def['{signature}']" in shown
    assert f"inputs['{c.INPUT_PIXELS}'] tensor_info:\n        dtype: DT_UINT8" in shown
    assert f"inputs['{c.INPUT_IMAGE_BYTES}'] tensor_info:\n        dtype: DT_STRING" in shown
    assert f"outputs['{c.OUTPUT_PROBABILITIES}'] tensor_info:\n        dtype: DT_FLOAT" in shown
    assert f"outputs['{c.OUTPUT_DIGIT}'] tensor_info:\n        dtype: DT_INT64" in shown
    assert "output_0" not in shown  # Keras' own names (keras-team/keras#19458) never leak


def test_reloaded_export_reproduces_the_report_exactly(trained_run, mnist):
    report = json.loads((trained_run["run_dir"] / "metrics.json").read_text())
    probs, digits = predict_with_export(trained_run["version_dir"], mnist.x_test)
    accuracy = float(np.mean(digits == mnist.y_test))
    assert accuracy == report["test"]["accuracy"]  # the same argmax, to the last image
    np.testing.assert_array_equal(digits, probs.argmax(axis=1))
    assert report["artifacts"]["export"] == str(trained_run["version_dir"])


def test_float_and_image_signatures_agree_with_pixels(trained_run, mnist):
    loaded = tf.saved_model.load(str(trained_run["version_dir"]))
    pixels = mnist.x_test[:16]
    by_uint8 = loaded.signatures[c.SIGNATURE_PIXELS](images=tf.constant(pixels))
    by_float = loaded.signatures[c.SIGNATURE_PIXELS_FLOAT](
        images=tf.constant(pixels.astype(np.float32))
    )
    pngs = [tf.io.encode_png(p[..., None]).numpy() for p in pixels]
    by_png = loaded.signatures[c.SIGNATURE_IMAGE_BYTES](image_bytes=tf.constant(pngs))
    for out in (by_float, by_png):
        np.testing.assert_array_equal(out[c.OUTPUT_DIGIT], by_uint8[c.OUTPUT_DIGIT])
        np.testing.assert_allclose(
            out[c.OUTPUT_PROBABILITIES], by_uint8[c.OUTPUT_PROBABILITIES], atol=1e-6
        )


def test_image_signature_resizes_other_sizes(trained_run, mnist):
    loaded = tf.saved_model.load(str(trained_run["version_dir"]))
    big = tf.image.resize(mnist.x_test[:8, :, :, None], [56, 56], method="nearest")
    pngs = [tf.io.encode_png(tf.cast(b, tf.uint8)).numpy() for b in big]
    out = loaded.signatures[c.SIGNATURE_IMAGE_BYTES](image_bytes=tf.constant(pngs))
    assert out[c.OUTPUT_PROBABILITIES].shape == (8, 10)
    assert np.mean(out[c.OUTPUT_DIGIT].numpy() == mnist.y_test[:8]) >= 0.75


def test_warmup_records_are_prediction_logs(trained_run):
    from tensorflow_serving.apis import prediction_log_pb2

    path = trained_run["version_dir"] / "assets.extra" / c.WARMUP_FILE
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    assert records
    for raw in records:
        entry = prediction_log_pb2.PredictionLog.FromString(raw)
        request = entry.predict_log.request
        assert request.model_spec.name == c.MODEL_NAME
        assert request.model_spec.signature_name == c.SIGNATURE_PIXELS
        assert tf.make_ndarray(request.inputs[c.INPUT_PIXELS]).shape[1:] == (28, 28)


def test_run_info_travels_with_the_model(trained_run, tmp_path):
    info = json.loads((trained_run["version_dir"] / "assets.extra" / c.RUN_INFO_FILE).read_text())
    assert info["config"]["train"]["limit"] == 12000
    assert info["model"]["parameters"] == 105_306
    # One shape whichever command exported: the report's run record, the whole test section.
    report = json.loads((trained_run["run_dir"] / "metrics.json").read_text())
    assert info == run_record(report)
    assert set(info) == set(RUN_RECORD) and "confusion_matrix" in info["test"]
    args = ["export", "--run", trained_run["run_dir"], "--export-dir", tmp_path / "models"]
    assert CliRunner().invoke(main, list(map(str, args))).exit_code == 0
    exported = tmp_path / "models" / "1" / "assets.extra" / c.RUN_INFO_FILE
    assert json.loads(exported.read_text()) == info


def test_export_command_takes_the_next_version_and_never_overwrites(trained_run, tmp_path):
    export_dir = tmp_path / "models" / "mnist"
    runner = CliRunner()
    args = ["export", "--run", str(trained_run["run_dir"]), "--export-dir", str(export_dir)]
    assert runner.invoke(main, args).exit_code == 0
    assert runner.invoke(main, args).exit_code == 0
    assert sorted(p.name for p in export_dir.iterdir()) == ["1", "2"]
    clash = runner.invoke(main, [*args, "--export-version", "2"])
    assert clash.exit_code == 2 and "never overwritten" in clash.output
    assert runner.invoke(main, [*args, "--export-version", "7"]).exit_code == 0
    assert versions.next_version(export_dir) == 8
    assert not [p for p in export_dir.iterdir() if p.name.startswith(".")]


def test_failed_export_leaves_no_version_folder(trained_run, tmp_path, monkeypatch):
    from job.rundir import load_trained_model

    model = load_trained_model(trained_run["run_dir"])

    def crash(path):
        raise OSError("disk full")

    monkeypatch.setattr(export, "write_warmup_requests", crash)
    with pytest.raises(OutputError, match="cannot write the export \\(disk full\\)"):
        export.export_for_serving(model, tmp_path / "m")
    assert list((tmp_path / "m").iterdir()) == []  # no "1", no temporary left behind


def test_export_of_a_run_without_a_model(tmp_path):
    with pytest.raises(JobError, match="no trained model"):
        from job.rundir import load_trained_model

        load_trained_model(tmp_path)
