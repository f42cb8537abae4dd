"""Distribution strategy: one process, several GPUs (mirrored), or several workers."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import tensorflow as tf

from job.errors import JobError

log = logging.getLogger(__name__)


def _tf_config_workers() -> int:
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except json.JSONDecodeError:
        raise JobError("TF_CONFIG is not valid JSON") from None
    return sum(len(cluster.get(role, [])) for role in ("chief", "worker"))


def resolve_mode(mode: str) -> str:
    """``auto``: multi-worker when TF_CONFIG names several workers, mirrored with several
    GPUs, otherwise none."""
    if mode != "auto":
        return mode
    if _tf_config_workers() > 1:
        return "multi-worker"
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return "mirrored"
    return "none"


def make_strategy(mode: str, per_replica_batch: int) -> tuple[dict, tf.distribute.Strategy]:
    """Return (what the report records, the strategy). ``--batch-size`` is per replica."""
    resolved = resolve_mode(mode)
    if resolved == "none":
        strategy = tf.distribute.get_strategy()
    elif resolved == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    else:
        raise JobError(f"--distribute {resolved} is not supported yet")
    replicas = strategy.num_replicas_in_sync
    return {
        "strategy": type(strategy).__name__ if resolved != "none" else "none",
        "mode": resolved,
        "replicas": replicas,
        "workers": 1,
        "global_batch_size": per_replica_batch * replicas,
        "per_replica_batch_size": per_replica_batch,
    }, strategy


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    return True


def work_dir(run_dir: Path, strategy: tf.distribute.Strategy) -> Path:
    return run_dir


def cleanup_worker_dir(work: Path, run_dir: Path) -> None:
    if work != run_dir:
        shutil.rmtree(work, ignore_errors=True)
