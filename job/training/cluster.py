"""The cluster from TF_CONFIG or Slurm's variables, without TensorFlow: the CLI asks first."""

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from job.errors import JobError

PORT_BASE_VARIABLE = "MNIST_JOB_PORT_BASE"
PORT_RANGE = (20000, 60000)  # derived ports fall here, clear of the usual service ports
PORTS_PER_STEP = 16  # one port per task on a node: up to 16 tasks of a step per node


def read_environment() -> dict[str, str]:
    prefixes = ("TF_CONFIG", "SLURM_", PORT_BASE_VARIABLE, "TF_NUM_")
    return {k: v for k, v in os.environ.items() if k.startswith(prefixes)}


def tf_config(env: Mapping[str, str]) -> dict:
    try:
        return json.loads(env.get("TF_CONFIG") or "{}")
    except json.JSONDecodeError:
        raise JobError("TF_CONFIG is not valid JSON") from None


def cluster_size(cluster: dict) -> int:
    """Workers that train: the chief (if any) and the workers."""
    return sum(len(cluster.get(role, [])) for role in ("chief", "worker"))


def under_slurm(env: Mapping[str, str]) -> bool:
    """Several tasks of one Slurm step (srun): a multi-worker cluster."""
    return int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in env


def names_several_workers(env: Mapping[str, str]) -> bool:
    """TF_CONFIG names several workers, or (without TF_CONFIG) Slurm runs several tasks."""
    if env.get("TF_CONFIG"):
        return cluster_size(tf_config(env).get("cluster", {})) > 1
    return under_slurm(env)


def writes_outputs(task_type: str, task_id: int, cluster_has_chief: bool) -> bool:
    """The chief, or worker 0 of a cluster without one, writes the outputs: the one rule."""
    return task_type in ("chief", "single") or (
        task_type == "worker" and task_id == 0 and not cluster_has_chief
    )


@dataclass(frozen=True)
class Role:
    task_type: str  # "chief", "worker", or "single" outside a cluster
    task_id: int
    is_chief: bool


def this_role(env: Mapping[str, str]) -> Role:
    """This process's role when several workers train together; "single" otherwise."""
    if not names_several_workers(env):
        return Role("single", 0, True)
    config = tf_config(env)
    task = config.get("task")
    if task:
        task_type, task_id = str(task.get("type", "worker")), int(task.get("index", 0))
        has_chief = bool(config.get("cluster", {}).get("chief"))
    else:
        task_type, task_id, has_chief = "worker", int(env.get("SLURM_PROCID", "0")), False
    return Role(task_type, task_id, writes_outputs(task_type, task_id, has_chief))


def slurm_variable(env: Mapping[str, str], name: str) -> str:
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
    job, step = int(slurm_variable(env, "SLURM_JOB_ID")), int(env.get("SLURM_STEP_ID", "0") or 0)
    slots = (PORT_RANGE[1] - PORT_RANGE[0]) // PORTS_PER_STEP
    return PORT_RANGE[0] + ((job * 4 + step % 4) % slots) * PORTS_PER_STEP


def worker_addresses(env: Mapping[str, str]) -> list[str]:
    """``host:port`` of every task of the step, in task order (SLURM_PROCID)."""
    hosts = expand_hostlist(slurm_variable(env, "SLURM_STEP_NODELIST"))
    tasks = expand_tasks_per_node(slurm_variable(env, "SLURM_STEP_TASKS_PER_NODE"))
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
