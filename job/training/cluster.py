"""This process's place in a cluster, from TF_CONFIG or Slurm's variables as the CLI captured
them; no TensorFlow here: the CLI and the run directory need it before TensorFlow starts."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from job.errors import JobError


def read_environment() -> dict[str, str]:
    """The variables the job reads (the cluster, its port base, TensorFlow's thread counts),
    captured once by the CLI and passed down."""
    prefixes = ("TF_CONFIG", "SLURM_", "MNIST_JOB_PORT_BASE", "TF_NUM_")
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
    """The chief, or worker 0 of a cluster without one, writes the run's outputs. The one
    rule for the role read from the environment and for the strategy's resolver."""
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
