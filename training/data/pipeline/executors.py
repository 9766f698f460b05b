"""Running stage chains on datatrove's executors: local processes, Slurm job arrays, or a Ray cluster.

Every stage logs into OUT/logs/<source>/<stage>/ (datatrove's completions/, stats/, logs/), so a rerun skips the
tasks that completed: a killed job continues where it stopped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .sources import Stage

EXECUTORS = ("local", "slurm", "ray")


@dataclass
class ExecutorOptions:
    """How to run: `kind` (local|slurm|ray), `workers` (concurrent tasks, local/ray), Slurm job settings."""

    kind: str = "local"
    workers: int = 1
    partition: str | None = None
    time: str = "24:00:00"
    cpus_per_task: int = 1
    mem_per_cpu_gb: int = 2
    sbatch_args: dict[str, Any] = field(default_factory=dict)
    env_command: str | None = None  # e.g. "source /path/venv/bin/activate"
    dry_run: bool = False  # Slurm: write the job scripts, submit nothing


def chain(stages: list[Stage], logs: list[str], options: ExecutorOptions, job_prefix: str):
    """The datatrove executors of one source, each depending on the previous; returns the last one."""
    previous = None
    for stage, logging_dir in zip(stages, logs, strict=True):
        if options.kind == "local":
            from datatrove.executor import LocalPipelineExecutor
            previous = LocalPipelineExecutor(stage.pipeline, tasks=stage.tasks, workers=min(options.workers,
                                                                                               stage.tasks),
                                             logging_dir=logging_dir, depends=previous, skip_completed=True)
        elif options.kind == "slurm":
            from datatrove.executor import SlurmPipelineExecutor
            if not options.partition:
                raise ValueError("--executor slurm needs --slurm-partition (the partition to submit to).")
            previous = SlurmPipelineExecutor(
                stage.pipeline, tasks=stage.tasks, time=options.time, partition=options.partition,
                cpus_per_task=options.cpus_per_task, mem_per_cpu_gb=options.mem_per_cpu_gb,
                workers=options.workers if options.workers > 1 else -1, logging_dir=logging_dir, depends=previous,
                job_name=f"{job_prefix}-{stage.name}", sbatch_args=dict(options.sbatch_args),
                env_command=options.env_command, skip_completed=True)
        elif options.kind == "ray":
            try:
                from datatrove.executor import RayPipelineExecutor
            except ImportError as error:  # pragma: no cover - depends on the environment
                raise ImportError("--executor ray needs `pip install 'datatrove[ray]'` and a running Ray cluster "
                                  "(ray.init()); its logging dir must be on a shared filesystem.") from error
            previous = RayPipelineExecutor(stage.pipeline, tasks=stage.tasks, workers=options.workers,
                                           logging_dir=logging_dir, depends=previous, skip_completed=True)
        else:
            raise ValueError(f"--executor must be one of {EXECUTORS}, got {options.kind!r}.")
    return previous


@contextlib.contextmanager
def slurm_dry_run(scripts: list[dict]) -> Iterator[None]:
    """Instead of calling sbatch, record each job script (and its sbatch arguments) and hand out fake job ids."""
    import datatrove.executor.slurm as slurm

    def record(contents: str, _retriever, *args) -> str:
        scripts.append({"script": contents, "args": list(args), "job_id": str(1000 + len(scripts))})
        return scripts[-1]["job_id"]

    original = slurm.launch_slurm_job
    slurm.launch_slurm_job = record
    try:
        yield
    finally:
        slurm.launch_slurm_job = original
