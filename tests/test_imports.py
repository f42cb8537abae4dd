"""The import contracts in pyproject.toml ([tool.importlinter]): the layers of STYLE.md, no
import circles, and serving reaching the job only through its contract module. A broken
contract prints which imports break it (pytest shows the captured output)."""

from importlinter.cli import lint_imports

from tests.conftest import REPO


def test_import_contracts_hold():
    assert lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True) == 0
