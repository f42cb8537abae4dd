"""Which device trains, how many threads it uses, seeds, precision and determinism."""

import logging
import os
from collections.abc import Mapping

import keras
import tensorflow as tf

from job.errors import JobError

log = logging.getLogger(__name__)


def select_device(device: str) -> str:
    """Make only the chosen device kind visible; returns "cpu" or "gpu". Touches no
    TensorFlow context, so a multi-worker strategy can still be created after."""
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise JobError("--device gpu: no GPU is visible to TensorFlow (try --device auto or cpu)")
    if device == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
    return "gpu" if gpus and device != "cpu" else "cpu"


def configure_threads(used: str, env: Mapping[str, str]) -> None:
    """On CPU one thread per op and an op per core side by side, unless TensorFlow's own
    ``TF_NUM_*OP_THREADS`` say otherwise: this model's ops are small (docs/performance.md)."""
    if used != "cpu":
        return
    threading = tf.config.threading
    for variable, setter, count in (
        ("TF_NUM_INTRAOP_THREADS", threading.set_intra_op_parallelism_threads, 1),
        ("TF_NUM_INTEROP_THREADS", threading.set_inter_op_parallelism_threads, os.cpu_count() or 1),
    ):
        given = env.get(variable, "")
        try:
            setter(int(given) if given.isdigit() else count)
        except RuntimeError:  # runtime already started (a second run in one process)
            log.debug("%s: thread pools already created; left as they are", variable)


def configure_runtime(
    requested: str, used: str, mixed_precision: bool, deterministic: bool, seed: int
) -> dict:
    """Seed everything, set the precision policy and determinism; returns the report's view."""
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    build = tf.sysconfig.get_build_info()
    gpus = tf.config.list_physical_devices("GPU") if used == "gpu" else []
    return {
        "requested": requested,
        "used": used,
        "logical_devices": [d.name for d in tf.config.list_logical_devices()],
        "gpus": [
            tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus
        ],
        "cuda_version": build.get("cuda_version"),
        "cudnn_version": build.get("cudnn_version"),
        "precision_policy": keras.mixed_precision.global_policy().name,
        "deterministic": deterministic,
        "threads": {  # 0: TensorFlow's default (one per core)
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        },
    }


def batch_shards(used: str, batch_size: int) -> int:
    """Slices per batch: on CPU one per inter-op thread, of at least 16 examples; on GPU one."""
    if used != "cpu":
        return 1
    threads = tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count() or 1
    return max(1, min(threads, batch_size // 16))


def peak_gpu_memory_mb(used: str) -> float | None:
    """The first GPU's peak memory use so far, in MB; None on CPU."""
    if used != "gpu":
        return None
    try:
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 1e6
    except (ValueError, RuntimeError):  # a device that does not report it
        return None
