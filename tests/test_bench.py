"""The benchmark scripts' own checks (they are scripts, not tests: nothing here times them)."""

import os
import subprocess
import sys

from tests.conftest import REPO


def test_bench_gpu_says_one_line_without_a_gpu():
    done = subprocess.run(
        [sys.executable, "bench/bench_gpu.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert done.returncode == 2
    (line,) = done.stdout.strip().splitlines()
    assert line.startswith("bench-gpu: no GPU is visible") and "Traceback" not in done.stderr
