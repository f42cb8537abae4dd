"""oneDNN on by default on x86-64, and the CPU a report names."""

import importlib
import json
import os
import platform
import subprocess
import sys

import pytest

from job import cpu
from tests.conftest import REPO

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 avx f16c avx2 bmi2 vaes

processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 avx512f
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: sse avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile
"""


@pytest.mark.parametrize(
    ("text", "model", "features"),
    [
        (ZEN3, "AMD EPYC 7B13", ["avx", "avx2", "fma"]),  # the first processor only
        (
            SAPPHIRE_RAPIDS,
            "Intel(R) Xeon(R) Platinum 8480+",
            ["amx_bf16", "amx_tile", "avx", "avx2", "avx512_bf16", "avx512_vnni"]
            + ["avx512bw", "avx512f", "avx_vnni", "fma"],
        ),
    ],
)
def test_cpu_description_reads_the_model_and_vector_features(tmp_path, text, model, features):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    assert cpu.cpu_description(path) == {"model": model, "vector_features": features}


def test_cpu_description_without_cpuinfo_names_the_platform(tmp_path):
    described = cpu.cpu_description(tmp_path / "missing")
    assert described["vector_features"] == []
    assert described["model"] in (platform.processor(), platform.machine())


@pytest.mark.parametrize(
    ("machine", "given", "expected"),
    [
        ("x86_64", None, "1"),
        ("AMD64", None, "1"),
        ("x86_64", "0", "0"),  # the user's choice stands
        ("aarch64", None, None),  # TensorFlow decides on other architectures
    ],
)
def test_onednn_is_asked_for_on_x86_64_unless_the_user_chose(monkeypatch, machine, given, expected):
    monkeypatch.setattr(platform, "machine", lambda: machine)
    environ = {} if given is None else {cpu.ONEDNN_VARIABLE: given}
    cpu.enable_onednn_by_default(environ)
    assert environ.get(cpu.ONEDNN_VARIABLE) == expected


@pytest.mark.integration
@pytest.mark.skipif(platform.machine().lower() not in cpu.X86_64, reason="x86-64 only")
@pytest.mark.parametrize(("given", "expected"), [(None, True), ("0", False)])
def test_the_jobs_report_says_whether_onednn_ran(tmp_path, synthetic_npz, given, expected):
    env = {k: v for k, v in os.environ.items() if k != cpu.ONEDNN_VARIABLE}
    if given is not None:
        env[cpu.ONEDNN_VARIABLE] = given
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "job", "train", "--data", str(synthetic_npz)]
    command += ["--output-dir", str(run_dir), "--no-export", "--epochs", "1"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    environment = json.loads((run_dir / "metrics.json").read_text())["environment"]
    assert environment["onednn"] is expected
    assert environment["cpu"] == cpu.cpu_description()


@pytest.mark.skipif(platform.machine().lower() not in cpu.X86_64, reason="x86-64 only")
@pytest.mark.parametrize("cli", ["job.cli"])  # serving does no math: it leaves TensorFlow be
def test_both_command_lines_ask_for_onednn_before_a_command_runs(monkeypatch, cli):
    from click.testing import CliRunner

    monkeypatch.delenv(cpu.ONEDNN_VARIABLE, raising=False)
    command = "train" if cli == "job.cli" else "predict"
    result = CliRunner().invoke(importlib.import_module(cli).main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert os.environ[cpu.ONEDNN_VARIABLE] == "1"


def test_onednn_state_is_unknown_where_tensorflow_moved_its_private_check(monkeypatch):
    from tensorflow.python.util import _pywrap_util_port as port  # what cpu.onednn_enabled asks

    assert cpu.onednn_enabled() is bool(port.IsMklEnabled())
    monkeypatch.delattr(port, "IsMklEnabled")
    assert cpu.onednn_enabled() is None
    monkeypatch.setitem(sys.modules, "tensorflow.python.util", None)  # the module is gone
    assert cpu.onednn_enabled() is None
