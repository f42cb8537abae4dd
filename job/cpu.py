"""The CPU: oneDNN on by default on x86-64 (why: docs/performance.md), and the model and
vector features a report names. Nothing here imports TensorFlow."""

import os
import platform
import sys
from collections.abc import MutableMapping
from pathlib import Path

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
X86_64 = ("x86_64", "amd64")


def enable_onednn_by_default(environ: MutableMapping[str, str] = os.environ) -> None:
    """Ask for oneDNN on x86-64 unless the user chose; before TensorFlow loads (it reads once)."""
    if platform.machine().lower() in X86_64:
        environ.setdefault(ONEDNN_VARIABLE, "1")


def import_tensorflow(verbose: bool) -> None:
    """Load TensorFlow quiet unless ``verbose`` or the level is set: 3 drops a CPU machine's CUDA
    error; absl logs before any level applies (abseil/abseil-cpp#1718), so fd 2 is /dev/null."""
    if verbose or LOG_LEVEL_VARIABLE in os.environ or "tensorflow" in sys.modules:
        return
    os.environ[LOG_LEVEL_VARIABLE] = "3"
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401  deferred: only the commands that train or export load it
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The first processor's model name and vector features (the AVX families, FMA, AMX),
    which decide the kernels; off Linux, the platform's name and no features."""
    fields: dict[str, str] = {}
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = fields.get("flags", "").split()
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine(),
        "vector_features": sorted({f for f in flags if f.startswith(("avx", "fma", "amx"))}),
    }


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its oneDNN kernels, from its internal check (there is no public
    one); None where a later version moved it."""
    try:
        from tensorflow.python.util import _pywrap_util_port as port
    except ImportError:
        return None
    check = getattr(port, "IsMklEnabled", None)
    return bool(check()) if callable(check) else None
