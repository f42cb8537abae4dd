"""Distribution strategies: one device, several GPUs of one machine (mirrored), or several
workers (TF_CONFIG or Slurm); and which worker writes the outputs."""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from pathlib import Path

import tensorflow as tf

from job.errors import JobError
from job.training import cluster
from job.training.slurm import slurm_cluster_resolver

STRATEGY_NAMES = {
    "none": "none",
    "mirrored": "MirroredStrategy",
    "multi-worker": "MultiWorkerMirroredStrategy",
}


def resolve_mode(mode: str, env: Mapping[str, str]) -> str:
    """``auto``: multi-worker when TF_CONFIG or Slurm name several workers, mirrored with
    several GPUs, otherwise none."""
    if mode != "auto":
        return mode
    if cluster.names_several_workers(env):
        return "multi-worker"
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "none"


def make_strategy(
    mode: str, per_replica_batch: int, env: Mapping[str, str]
) -> tuple[dict, tf.distribute.Strategy]:
    """Return (what the report records, the strategy). ``--batch-size`` is per replica."""
    resolved = resolve_mode(mode, env)
    tasks = {"single-0": socket.gethostname()}  # the report's distribution.tasks
    if resolved == "none":
        strategy = tf.distribute.get_strategy()
    elif resolved == "mirrored":
        strategy = tf.distribute.MirroredStrategy()  # every GPU; without one, the CPU
    else:
        if cluster.cluster_size(cluster.tf_config(env).get("cluster", {})) >= 1:
            # TensorFlow's resolver reads TF_CONFIG itself: the variable the CLI captured.
            resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        elif cluster.under_slurm(env):
            resolver = slurm_cluster_resolver(env)
        else:
            raise JobError("--distribute multi-worker: set TF_CONFIG, or run under srun")
        spec = resolver.cluster_spec().as_dict()
        tasks = {
            f"{job}-{i}": address
            for job in ("chief", "worker")
            for i, address in enumerate(spec.get(job, []))
        }
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    replicas = strategy.num_replicas_in_sync
    return {
        "strategy": STRATEGY_NAMES[resolved],
        "mode": resolved,
        "replicas": replicas,
        "workers": len(tasks),
        "tasks": tasks,  # every task of the cluster and its host:port (this host alone)
        "global_batch_size": per_replica_batch * replicas,
        "per_replica_batch_size": per_replica_batch,
    }, strategy


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The chief (or worker 0 when the cluster has no chief) writes the outputs."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return cluster.writes_outputs(resolver.task_type, resolver.task_id, has_chief)


def work_dir(run_dir: Path, strategy: tf.distribute.Strategy) -> Path:
    """Where this process writes checkpoints: the run directory for the chief, a folder of
    its own for every other worker (workers must write, but not where the chief does)."""
    if is_chief(strategy):
        return run_dir
    resolver = strategy.cluster_resolver
    return run_dir / f".worker-{resolver.task_type}-{resolver.task_id}"


def lost_worker(strategy: tf.distribute.Strategy, error: Exception) -> str:
    """Which other worker a collective op's failure names, as ``<task> (<host:port>)``."""
    resolver = strategy.cluster_resolver
    for job, index in re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", str(error)):
        if (job, int(index)) != (resolver.task_type, resolver.task_id):
            address = resolver.cluster_spec().task_address(job, int(index))
            return f"{job} {index} ({address})"
    return "another worker"
