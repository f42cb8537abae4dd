"""The CPU: oneDNN on by default on x86-64, and the model and vector features a report names.

TensorFlow turns its oneDNN kernels on by itself only on x86 CPUs with AVX-512 VNNI or
BF16, AVX-VNNI or AMX; on the others (AVX2 CPUs such as AMD Zen 2 and 3) its Eigen kernels
make this model's epochs over twice as long (docs/performance.md). Nothing here imports
TensorFlow.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import MutableMapping
from pathlib import Path

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
CPUINFO = Path("/proc/cpuinfo")
X86_64 = ("x86_64", "amd64")
# The vector extensions that decide which kernels run: the AVX families and AMX.
VECTOR_FEATURE_PREFIXES = ("avx", "fma", "amx")


def enable_onednn_by_default(environ: MutableMapping[str, str] = os.environ) -> None:
    """Ask TensorFlow for oneDNN on x86-64 unless the user set TF_ENABLE_ONEDNN_OPTS.

    TensorFlow reads the variable once, when it loads: call this before importing it.
    """
    if platform.machine().lower() in X86_64:
        environ.setdefault(ONEDNN_VARIABLE, "1")


def import_tensorflow(verbose: bool, environ: MutableMapping[str, str] = os.environ) -> None:
    """Load TensorFlow without its C++ log lines, unless ``verbose`` or the user set
    TF_CPP_MIN_LOG_LEVEL.

    Level 3 drops its notes and errors (the CUDA error a CPU machine prints); absl writes
    its start-up lines (oneDNN, CUDA drivers) before any level applies
    (abseil/abseil-cpp#1718), so file descriptor 2 is on /dev/null while TensorFlow loads.
    """
    if verbose or LOG_LEVEL_VARIABLE in environ or "tensorflow" in sys.modules:
        return
    environ[LOG_LEVEL_VARIABLE] = "3"
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401  deferred: only the commands that train or export load it
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def cpu_description(cpuinfo: Path = CPUINFO) -> dict:
    """The CPU's model name and its vector features (AVX, AVX2, FMA, AVX-512, AMX), sorted.

    From the first processor in /proc/cpuinfo; where there is none (not Linux), the model
    from the platform module and no features.
    """
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
        "vector_features": sorted({f for f in flags if f.startswith(VECTOR_FEATURE_PREFIXES)}),
    }


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its oneDNN kernels; None where TensorFlow cannot say.

    TensorFlow has no public call for this, so this asks its own internal check and falls
    back to None if a later version moves it.
    """
    try:
        from tensorflow.python.util import _pywrap_util_port as port
    except ImportError:
        return None
    check = getattr(port, "IsMklEnabled", None)
    return bool(check()) if callable(check) else None
