"""Atomic writes: a temporary name in the same folder, fsync, then rename over the target."""

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from job.errors import OutputError


def default_mode(directory: bool = False) -> int:
    """The permissions a plain open()/mkdir() would give; mkstemp/mkdtemp use 0600/0700."""
    umask = os.umask(0)  # the only way to read it: set one, put it back
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def output_error(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"{path}: cannot write ({exc.strerror or exc})")


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write`` on a temporary file beside ``path`` and rename it into place: readers
    see the old file or the whole new one. Raises OutputError, leaving ``path`` untouched."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except OSError as exc:
        raise output_error(path, exc) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path


def write_json_atomic(path: Path, data: object) -> Path:
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    return write_atomic(path, lambda f: f.write(text.encode()))


def save_keras_atomic(model, path: Path) -> Path:
    """``model.save`` under a temporary name that keeps the suffix (Keras picks the format
    from it), then rename. Raises OutputError."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(tmp)
        tmp.replace(path)
    except OSError as exc:
        raise output_error(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_writable_dir(path: Path) -> None:
    """Create ``path`` if needed and prove it can be written, or raise OSError."""
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test."):
        pass
