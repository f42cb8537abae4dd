"""Numbered version folders under a model base path, as TensorFlow Serving reads them.
No TensorFlow here, so a run can check its ``--export-version`` before it trains."""

import errno
import json
import os
from pathlib import Path

from job.errors import JobError
from job.export import contract as c

RENAME_TRIES = 100  # versions taken by concurrent exports before giving up


def existing_versions(export_dir: Path) -> list[int]:
    if not export_dir.is_dir():
        return []
    return sorted(int(p.name) for p in export_dir.iterdir() if p.name.isdecimal())


def next_version(export_dir: Path) -> int:
    return max(existing_versions(export_dir), default=0) + 1


def check_version_free(export_dir: Path, version: int) -> None:
    """Raises JobError if ``version`` exists (the CLI has checked that it is positive)."""
    folder = export_dir / str(version)
    if folder.exists():
        raise JobError(f"{folder}: version {version} already exists; it is never overwritten")


def rename_into_version(tmp: Path, export_dir: Path, version: int | None) -> Path:
    """Move ``tmp`` into place as ``version`` atomically; without one, as the next free number, and
    the next again when a concurrent export takes it first (a finished export is never lost)."""
    for _ in range(RENAME_TRIES):
        number = version if version is not None else next_version(export_dir)
        final = export_dir / str(number)
        try:
            # Atomic; fails rather than replace a non-empty folder. An empty one it replaces,
            # but no exporter ever leaves an empty version folder.
            os.rename(tmp, final)
            return final
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            if version is not None:
                raise JobError(f"{final}: appeared while exporting; not overwritten") from None
    raise JobError(f"{export_dir}: no free version after {RENAME_TRIES} tries")


def newest_recorded_accuracy(export_dir: Path) -> tuple[int, float] | None:
    """(version, test accuracy) of the newest version whose run record states one."""
    for version in reversed(existing_versions(export_dir)):
        record = export_dir / str(version) / "assets.extra" / c.RUN_INFO_FILE
        try:
            return version, float(json.loads(record.read_text())["test"]["accuracy"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # exported by something else, or unreadable: not a baseline
    return None
