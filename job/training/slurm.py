"""The multi-worker cluster of a Slurm step, from Slurm's variables alone: TensorFlow's
``SlurmClusterResolver`` needs ``nvidia-smi`` and puts every job on port 8888 (docs/clusters.md)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import tensorflow as tf

from job.errors import JobError

log = logging.getLogger(__name__)

PORT_BASE_VARIABLE = "MNIST_JOB_PORT_BASE"
PORT_RANGE = (20000, 60000)  # derived ports fall here, clear of the usual service ports
PORTS_PER_STEP = 16  # one port per task on a node: up to 16 tasks of a step per node


def _slurm(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if value is None:
        raise JobError(f"multi-worker under Slurm: {name} is not set (run the job with srun)")
    return value


def expand_hostlist(nodelist: str) -> list[str]:
    """Slurm's compressed host list (``node[07-08,10],gpu1``) as host names, zero padding
    kept. (TensorFlow's Slurm resolver has a parser, but not as a public API.)"""
    part = r"[^,\[\]]+(?:\[\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*\])?"
    if not re.fullmatch(rf"{part}(?:,{part})*", nodelist):
        raise JobError(f"multi-worker under Slurm: host list {nodelist!r} not understood")
    hosts = []
    for prefix, ranges in re.findall(r"([^,\[\]]+)(?:\[([^\]]+)\])?", nodelist):
        if not ranges:
            hosts.append(prefix)
            continue
        for item in ranges.split(","):
            first, _, last = item.partition("-")
            numbers = range(int(first), int(last or first) + 1)
            hosts += [f"{prefix}{i:0{len(first)}d}" for i in numbers]
    return hosts


def expand_tasks_per_node(text: str) -> list[int]:
    """Slurm's tasks per node (``2(x3),1``) as one count per node."""
    counts = []
    for part in text.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not match:
            raise JobError(f"multi-worker under Slurm: tasks per node {text!r} not understood")
        counts += [int(match[1])] * int(match[2] or 1)
    return counts


def port_base(env: Mapping[str, str]) -> int:
    """The first port of this step's tasks on each node: ``MNIST_JOB_PORT_BASE``, the step's
    reserved ports, or one derived from the job and step ids (distinct within 2,500 jobs)."""
    given = env.get(PORT_BASE_VARIABLE)
    if given:
        if not given.isdigit() or not 1024 <= int(given) <= 65535 - PORTS_PER_STEP:
            raise JobError(f"{PORT_BASE_VARIABLE}={given!r}: expected a port from 1024 up")
        return int(given)
    reserved = env.get("SLURM_STEP_RESV_PORTS")
    if reserved:
        return int(reserved.split("-")[0].split(",")[0])
    job, step = int(_slurm(env, "SLURM_JOB_ID")), int(env.get("SLURM_STEP_ID", "0") or 0)
    slots = (PORT_RANGE[1] - PORT_RANGE[0]) // PORTS_PER_STEP
    return PORT_RANGE[0] + ((job * 4 + step % 4) % slots) * PORTS_PER_STEP


def worker_addresses(env: Mapping[str, str]) -> list[str]:
    """``host:port`` of every task of the step, in task order (SLURM_PROCID)."""
    hosts = expand_hostlist(_slurm(env, "SLURM_STEP_NODELIST"))
    tasks = expand_tasks_per_node(_slurm(env, "SLURM_STEP_TASKS_PER_NODE"))
    if len(hosts) != len(tasks):
        raise JobError("multi-worker under Slurm: the node list and tasks per node disagree")
    base = port_base(env)
    return [
        f"{host}:{base + local}"
        for host, count in zip(hosts, tasks, strict=True)
        for local in range(count)
    ]


def gpus_for_this_task(visible: list, tasks_on_node: int, local_id: int, per_task: str) -> list:
    """Those Slurm bound to this task (``per_task``: ``SLURM_GPUS_PER_TASK``), else an equal
    share of the node's by local task id; with fewer GPUs than tasks, all of them, shared."""
    if per_task.isdigit() and len(visible) == int(per_task):
        return visible
    if tasks_on_node > 1 and len(visible) >= tasks_on_node:
        share = len(visible) // tasks_on_node
        return visible[local_id * share : (local_id + 1) * share]
    return visible


def slurm_cluster_resolver(
    env: Mapping[str, str],
) -> tf.distribute.cluster_resolver.ClusterResolver:
    """This step's cluster, each task on its own GPUs. Must run before TensorFlow's runtime
    starts (it may change the visible GPUs)."""
    addresses = worker_addresses(env)
    task_id = int(_slurm(env, "SLURM_PROCID"))
    local_id = int(env.get("SLURM_LOCALID", "0"))
    node_id = int(env.get("SLURM_NODEID", "0"))
    tasks_on_node = expand_tasks_per_node(_slurm(env, "SLURM_STEP_TASKS_PER_NODE"))[node_id]
    visible = tf.config.get_visible_devices("GPU")
    mine = gpus_for_this_task(visible, tasks_on_node, local_id, env.get("SLURM_GPUS_PER_TASK", ""))
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
