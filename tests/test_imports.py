"""The import contracts in pyproject.toml ([tool.importlinter]): the layers of STYLE.md, no
import circles, and serving reaching the job only through its contract module. A broken
contract prints which imports break it.

lint-imports runs in a process of its own: its logging set-up (``dictConfig``) disables every
logger that exists, the job's too, for the tests that run after it."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_import_contracts_hold():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--config", "pyproject.toml", "--no-cache"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
