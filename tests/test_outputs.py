"""What lands on disk: atomic writes, the run directory's claim and commit, reports read back."""

from __future__ import annotations

import json
import os
import re
import stat
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from job import files, rundir
from job.errors import JobError, OutputError
from job.report import REPORT_FILENAME, SCHEMA_VERSION, read_report, write_report
from tests.conftest import load_schema

# --------------------------------------------------------------------------- atomic writes


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_write_atomic_replaces_the_whole_file_with_plain_permissions(tmp_path):
    target = tmp_path / "new" / "folders" / "out.bin"
    assert files.write_atomic(target, lambda f: f.write(b"first")) == target
    files.write_atomic(target, lambda f: f.write(b"second"))
    assert target.read_bytes() == b"second"
    assert mode(target) == files.default_mode() == 0o666 & ~umask()
    assert files.default_mode(directory=True) == 0o777 & ~umask()
    assert os.listdir(target.parent) == ["out.bin"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")

    def fail(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(
        OutputError, match=f"^{target}: cannot write \\(No space left on device\\)$"
    ):
        files.write_atomic(target, fail)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.json"]


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="file/out.json: cannot write"):
        files.write_atomic(tmp_path / "file" / "out.json", lambda f: f.write(b"{}"))


def test_the_write_goes_through_a_temporary_file_in_the_same_folder(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    seen = []

    def write(f):
        seen.append((sorted(os.listdir(tmp_path)), target.read_text()))
        f.write(b"new")

    files.write_atomic(target, write)
    ((listing, during),) = seen
    assert during == "old"  # the target is untouched until the rename
    assert listing[1] == "out.json" and re.fullmatch(r"\.out\.json\..+\.tmp", listing[0])
    assert target.read_text() == "new"


def test_write_json_atomic_writes_indented_json_with_a_final_newline(tmp_path):
    target = tmp_path / "r.json"
    files.write_json_atomic(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == '{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ]\n}\n'


class FakeModel:
    def __init__(self, fail: bool = False):
        self.fail, self.saved_to = fail, None

    def save(self, path):
        self.saved_to = path
        path.write_text("model")
        if self.fail:
            raise OSError(5, "Input/output error")


def test_save_keras_atomic_saves_under_a_keras_suffix_then_renames(tmp_path):
    target = tmp_path / "new" / "folders" / "model.keras"
    model = FakeModel()
    assert files.save_keras_atomic(model, target) == target
    assert model.saved_to.suffix == ".keras" and model.saved_to != target
    assert model.saved_to.parent == target.parent
    assert target.read_text() == "model" and os.listdir(target.parent) == ["model.keras"]


def test_a_failed_keras_save_leaves_nothing(tmp_path):
    target = tmp_path / "model.keras"
    with pytest.raises(OutputError, match=f"^{target}: cannot write \\(Input/output error\\)$"):
        files.save_keras_atomic(FakeModel(fail=True), target)
    assert os.listdir(tmp_path) == []


def test_check_writable_dir_makes_the_folder_and_leaves_it_empty(tmp_path):
    folder = tmp_path / "a" / "b"
    files.check_writable_dir(folder)
    assert folder.is_dir() and os.listdir(folder) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError):
        files.check_writable_dir(tmp_path / "file")
    with pytest.raises(OSError):  # exists, but no file can be made in it, even by root
        files.check_writable_dir(Path("/proc/self"))


# --------------------------------------------------------------------------- the run directory


def test_run_names_are_the_utc_time_and_six_hex_digits():
    name = rundir.new_run_name(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert re.fullmatch(r"20260102T030405Z-[0-9a-f]{6}", name)


def test_run_names_take_the_utc_time_whatever_the_local_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # UTC+9 all year
    time.tzset()
    try:
        before = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        name = rundir.new_run_name()
        after = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert before <= name.split("-")[0] <= after


def test_an_exclusive_claim_makes_the_folder_and_refuses_an_existing_one(tmp_path):
    run_dir = tmp_path / "runs" / "r1"
    with rundir.claim(run_dir, overwrite=False, exclusive=True) as held:
        assert held.created and not held.started
        lock = (run_dir / rundir.LOCK_FILENAME).read_text()
        assert lock == f"pid {os.getpid()} on {os.uname().nodename}\n"
        assert mode(run_dir / rundir.LOCK_FILENAME) == 0o644 & ~umask()
        held.mark_started()
    with (
        pytest.raises(JobError, match=f"^{run_dir}: already exists; choose another --output-dir$"),
        rundir.claim(run_dir, overwrite=False, exclusive=True),
    ):
        pass


def test_a_claimed_folder_is_refused_to_a_second_claim(tmp_path):
    run_dir = tmp_path / "run"
    with rundir.claim(run_dir, overwrite=False, exclusive=False) as held:
        assert held.created
        with (
            pytest.raises(JobError, match=f"^{run_dir}: in use by a live run \\(pid {os.getpid()}"),
            rundir.claim(run_dir, overwrite=True, exclusive=False),
        ):
            pass
        assert run_dir.is_dir()  # the refused claim removed nothing
    with rundir.claim(run_dir, overwrite=False, exclusive=False) as again:
        assert not again.created  # the lock went with the first claim


@pytest.mark.parametrize(
    ("content", "holder"), [(b"", "another process"), (b"pid 7 \xff\n", "pid 7 \ufffd")]
)
def test_the_refusal_names_the_holder_as_its_lock_file_states_it(tmp_path, content, holder):
    run_dir = tmp_path / "run"
    with rundir.claim(run_dir, overwrite=False, exclusive=False):
        (run_dir / rundir.LOCK_FILENAME).write_bytes(content)
        with (
            pytest.raises(JobError, match=f"in use by a live run \\({holder}\\); choose another"),
            rundir.claim(run_dir, overwrite=False, exclusive=False),
        ):
            pass


def test_a_run_that_fails_before_it_starts_leaves_no_folder(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError), rundir.claim(run_dir, overwrite=False, exclusive=False):
        raise RuntimeError("failed before training")
    assert not run_dir.exists()
    with pytest.raises(RuntimeError), rundir.claim(run_dir, False, False) as held:
        held.mark_started()
        raise RuntimeError("failed while training")
    assert run_dir.is_dir()  # training started: kept to resume


def test_a_failed_claim_on_a_folder_it_did_not_make_keeps_it(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError), rundir.claim(run_dir, overwrite=False, exclusive=False):
        raise RuntimeError
    assert (run_dir / "notes.txt").read_text() == "mine"


def test_another_workers_failed_claim_never_removes_the_folder(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError), rundir.claim(run_dir, False, False, lock_suffix="worker-1"):
        raise RuntimeError
    assert (run_dir / ".lock-worker-1").exists()


def test_a_finished_run_is_kept_unless_overwrite_clears_it(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / rundir.BACKUP_DIRNAME).mkdir(parents=True)
    (run_dir / rundir.TENSORBOARD_DIRNAME).mkdir()
    (run_dir / rundir.HISTORY_FILENAME).write_text("[]")
    (run_dir / REPORT_FILENAME).write_text("{}")
    with (
        pytest.raises(JobError, match="holds a finished run; pass --overwrite"),
        rundir.claim(run_dir, overwrite=False, exclusive=False),
    ):
        pass
    assert (run_dir / rundir.HISTORY_FILENAME).exists()
    with rundir.claim(run_dir, overwrite=True, exclusive=False):
        assert sorted(os.listdir(run_dir)) == [rundir.LOCK_FILENAME, REPORT_FILENAME]


def test_overwrite_clears_what_is_there_and_minds_nothing_missing(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / REPORT_FILENAME).write_text("{}")
    with rundir.claim(run_dir, overwrite=True, exclusive=False):
        assert sorted(os.listdir(run_dir)) == [rundir.LOCK_FILENAME, REPORT_FILENAME]


def settings(recipe="default", epochs=5, data="a.npz"):
    """The parts of ``JobConfig.to_dict()`` that check_same_run reads."""
    return {"train": {"recipe": recipe, "epochs": epochs, "batch_size": 32}, "data_path": data}


def test_resuming_lets_only_the_default_recipes_epochs_grow(tmp_path, caplog):
    default, fast = tmp_path / "default", tmp_path / "fast"
    rundir.Claim(default, created=True).mark_started(rundir.check_same_run(default, settings()))
    with caplog.at_level("INFO", logger="job.rundir"):
        assert rundir.check_same_run(default, settings(epochs=7))["--epochs"] == 7
    assert caplog.messages == [f"resuming {default} with --epochs raised from 5 to 7"]
    with pytest.raises(JobError, match=r"other options: --data a.npz \(now b.npz\);"):
        rundir.check_same_run(default, settings(data="b.npz"))
    # The fast recipe's learning rate follows a schedule over its epochs: they may not grow.
    rundir.Claim(fast, created=True).mark_started(rundir.check_same_run(fast, settings("fast", 20)))
    with pytest.raises(JobError, match=r"other options: --epochs 20 \(now 30\);"):
        rundir.check_same_run(fast, settings("fast", 30))


def test_an_unfinished_run_is_resumed_not_cleared(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / rundir.BACKUP_DIRNAME).mkdir(parents=True)
    (run_dir / rundir.HISTORY_FILENAME).write_text("[]")
    with rundir.claim(run_dir, overwrite=False, exclusive=False):
        assert (run_dir / rundir.BACKUP_DIRNAME).is_dir()
        assert (run_dir / rundir.HISTORY_FILENAME).exists()


def test_an_unwritable_output_dir_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with (
        pytest.raises(JobError, match="file/run: output directory is not writable"),
        rundir.claim(tmp_path / "file" / "run", overwrite=False, exclusive=False),
    ):
        pass


def test_staged_outputs_replace_the_old_ones_and_the_report_goes_first(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / REPORT_FILENAME).write_text("old report")
    (run_dir / "loss.png").write_text("old")
    staging = rundir.fresh_staging(run_dir)
    assert staging == run_dir / rundir.STAGING_DIRNAME and not staging.exists()
    staging.mkdir()
    (staging / "loss.png").write_text("new")
    (staging / "model.keras").write_text("new")
    rundir.commit_outputs(staging, run_dir)
    assert sorted(os.listdir(run_dir)) == ["loss.png", "model.keras"]
    assert (run_dir / "loss.png").read_text() == "new"
    staging.mkdir()  # a first run has no report to remove
    (staging / "accuracy.png").write_text("new")
    rundir.commit_outputs(staging, run_dir)
    assert sorted(os.listdir(run_dir)) == ["accuracy.png", "loss.png", "model.keras"]


def test_a_staging_folder_left_by_a_crash_is_discarded(tmp_path):
    staging = tmp_path / rundir.STAGING_DIRNAME
    staging.mkdir()
    (staging / "half.png").write_text("x")
    assert not rundir.fresh_staging(tmp_path).exists()


def test_a_run_without_a_loadable_model_is_one_line(tmp_path):
    with pytest.raises(JobError, match=f"model.keras: no trained model \\(is {tmp_path} a"):
        rundir.load_trained_model(tmp_path)
    (tmp_path / rundir.MODEL_FILENAME).write_text("not a model")
    with pytest.raises(JobError, match="model.keras: cannot load the model \\(ValueError: "):
        rundir.load_trained_model(tmp_path)


def test_a_trained_model_loads_and_one_that_runs_python_code_is_refused(tmp_path):
    import keras

    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    plain.save(tmp_path / rundir.MODEL_FILENAME)
    assert rundir.load_trained_model(tmp_path).count_params() == 3
    unsafe = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x * 2)])
    unsafe.save(tmp_path / rundir.MODEL_FILENAME)
    with pytest.raises(JobError, match="cannot load the model .*Lambda"):
        rundir.load_trained_model(tmp_path)


# --------------------------------------------------------------------------- reports read back


def test_a_report_is_read_from_its_file_or_its_run_directory(tmp_path):
    report = {"schema_version": 1, "test": {"accuracy": 0.5}}
    path = write_report(tmp_path, report)
    assert path == tmp_path / REPORT_FILENAME
    assert json.loads(path.read_text()) == report
    assert read_report(tmp_path) == {**report, "_path": str(path)}
    assert read_report(path) == {**report, "_path": str(path)}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "no such report"),
        ("{not json", "not a readable JSON report"),
        (b"\xff\xfe", "not a readable JSON report"),
        ("[1, 2]", "not a metrics report \\(no schema_version\\)"),
        ('{"test": {}}', "not a metrics report \\(no schema_version\\)"),
    ],
)
def test_what_is_not_a_report_is_one_line(tmp_path, text, problem):
    path = tmp_path / REPORT_FILENAME
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    with pytest.raises(JobError, match=f"^{path}: {problem}"):
        read_report(tmp_path)


def test_a_report_that_cannot_be_read_is_one_line(tmp_path):
    (tmp_path / REPORT_FILENAME).mkdir()
    with pytest.raises(JobError, match="metrics.json: not a readable JSON report"):
        read_report(tmp_path)


def test_the_schema_ships_with_the_package():
    schema = load_schema()
    assert schema["title"] == "mnist-job metrics report"
    assert schema["properties"]["schema_version"] == {"const": SCHEMA_VERSION}
