"""Distribution strategies (one device, mirrored, multi-worker) and who writes what."""

import logging
import re
import socket
from collections.abc import Mapping

import tensorflow as tf

from job.errors import JobError
from job.training import cluster

log = logging.getLogger(__name__)

STRATEGY_NAMES = {
    "none": "none",
    "mirrored": "MirroredStrategy",
    "multi-worker": "MultiWorkerMirroredStrategy",
}


def resolve_mode(mode: str, env: Mapping[str, str]) -> str:
    """``auto``: multi-worker when several workers are named, mirrored with several GPUs."""
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
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return cluster.writes_outputs(resolver.task_type, resolver.task_id, has_chief)


def lost_worker(strategy: tf.distribute.Strategy, error: Exception) -> str:
    """Which other worker a collective op's failure names, as ``<task> (<host:port>)``."""
    resolver = strategy.cluster_resolver
    for job, index in re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", str(error)):
        if (job, int(index)) != (resolver.task_type, resolver.task_id):
            address = resolver.cluster_spec().task_address(job, int(index))
            return f"{job} {index} ({address})"
    return "another worker"


def slurm_cluster_resolver(
    env: Mapping[str, str],
) -> tf.distribute.cluster_resolver.ClusterResolver:
    """This Slurm step's cluster, each task on its own GPUs, without ``nvidia-smi`` or port 8888
    (docs/clusters.md). Must run before TensorFlow's runtime starts (it may change the GPUs)."""
    addresses = cluster.worker_addresses(env)  # checks the step's node and task variables
    task_id = int(cluster.slurm_variable(env, "SLURM_PROCID"))
    local_id = int(env.get("SLURM_LOCALID", "0"))
    node_id = int(env.get("SLURM_NODEID", "0"))
    tasks_on_node = cluster.expand_tasks_per_node(env["SLURM_STEP_TASKS_PER_NODE"])[node_id]
    visible = tf.config.get_visible_devices("GPU")
    per_task = env.get("SLURM_GPUS_PER_TASK", "")
    mine = cluster.gpus_for_this_task(visible, tasks_on_node, local_id, per_task)
    if mine != visible:
        tf.config.set_visible_devices(mine, "GPU")
    log.info(
        "Slurm task %d/%d at %s, %d GPU(s)", task_id, len(addresses), addresses[task_id], len(mine)
    )
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({"worker": addresses}),
        task_type="worker",
        task_id=task_id,
        num_accelerators={"GPU": len(mine)},
        rpc_layer="grpc",
    )
