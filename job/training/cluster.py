"""The cluster a process belongs to, from TF_CONFIG or Slurm's variables alone.

No TensorFlow here: the CLI and the run directory need to know whether this process is
one of several workers, and which, before anything starts TensorFlow.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from job.errors import JobError


def tf_config() -> dict:
    try:
        return json.loads(os.environ.get("TF_CONFIG") or "{}")
    except json.JSONDecodeError:
        raise JobError("TF_CONFIG is not valid JSON") from None


def cluster_size(cluster: dict) -> int:
    """Workers that train: the chief (if any) and the workers."""
    return sum(len(cluster.get(role, [])) for role in ("chief", "worker"))


def under_slurm() -> bool:
    """Several tasks of one Slurm step (srun): a multi-worker cluster."""
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ


def names_several_workers() -> bool:
    """TF_CONFIG names several workers, or (without TF_CONFIG) Slurm runs several tasks."""
    if os.environ.get("TF_CONFIG"):
        return cluster_size(tf_config().get("cluster", {})) > 1
    return under_slurm()


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

    @property
    def is_chief(self) -> bool:
        return writes_outputs(self.task_type, self.task_id, _has_chief())

    @property
    def label(self) -> str:
        return f"{self.task_type}-{self.task_id}"


def _has_chief() -> bool:
    return bool(tf_config().get("cluster", {}).get("chief"))


def this_role() -> Role:
    """This process's role when several workers train together; "single" otherwise."""
    if not names_several_workers():
        return Role("single", 0)
    task = tf_config().get("task")
    if task:
        return Role(str(task.get("type", "worker")), int(task.get("index", 0)))
    return Role("worker", int(os.environ.get("SLURM_PROCID", "0")))
