"""Data-parallel evaluation: which process computes which batch, and how every process gets all the results.

Every process builds the same requests and plans the same batches from them (planning is deterministic), computes
the batches assigned to its *global* data-parallel rank (never the local one: that collides across nodes, lm-eval's
bug), and all processes exchange their results. A batch is computed with the same composition whatever the number of
processes or nodes, so results are bit-identical to a single-process run. Batches go to ranks by estimated cost
(tokens), longest first to the least-loaded rank, so ranks finish together.

With a request cache (`request_cache.RequestCache`) a batch whose requests are all cached is read back; any other
batch is computed whole and written in one transaction, so a run killed at any point and started again recomputes
exactly the batches that were lost, with the same composition, and writes the uninterrupted run's results.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Hashable, Sequence, TypeVar

from .request_cache import RequestCache

B = TypeVar("B")

KILL_AFTER_ENV = "LLAMA_PAPER_EVAL_KILL_AFTER"  # test hook: SIGKILL this process once it has cached N requests


@dataclass
class World:
    """This process's place among the evaluation processes (a single process by default)."""

    rank: int = 0
    size: int = 1
    tensor_parallel: int = 1  # the ranks rank // tp share a model (and so compute the same batches)
    group: Any = field(default=None, repr=False)  # a gloo group for exchanging Python objects

    @property
    def dp_rank(self) -> int:
        """Index of this process's data-parallel replica."""
        return self.rank // self.tensor_parallel

    @property
    def dp_size(self) -> int:
        """Number of data-parallel replicas."""
        return self.size // self.tensor_parallel

    @property
    def is_main(self) -> bool:
        """The global rank 0, which writes results.json, samples.jsonl and the table."""
        return self.rank == 0

    @property
    def writes_cache(self) -> bool:
        """One process per replica writes the cache (tensor-parallel peers hold the same results)."""
        return self.rank % self.tensor_parallel == 0

    def all_gather(self, obj: Any) -> list[Any]:
        """`obj` from every process, in rank order."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj, group=self.group)
        return out


def init_world(tensor_parallel: int = 1) -> World:
    """The World of a process started by `accelerate launch` / `torchrun` (env WORLD_SIZE, RANK), else one process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if tensor_parallel < 1 or size % tensor_parallel:
        raise ValueError(f"--tensor-parallel {tensor_parallel} must divide the number of processes ({size}); launch "
                         f"with torchrun --nproc-per-node {tensor_parallel} (or a multiple of it).")
    if size == 1:
        return World()
    import torch.distributed as dist

    if not dist.is_initialized():
        # Default backends: gloo for CPU tensors, NCCL for CUDA ones. Ranks that finish their share early wait in
        # the gather for the slowest, hence the long timeout.
        dist.init_process_group(timeout=timedelta(hours=12))
    return World(dist.get_rank(), dist.get_world_size(), tensor_parallel, dist.new_group(backend="gloo"))


def assign(costs: Sequence[float], ranks: int) -> list[int]:
    """Owner rank of each item: longest first, each to the least-loaded rank (ties: lowest index)."""
    owner, load = [0] * len(costs), [0.0] * ranks
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(ranks), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += costs[i]
    return owner


@dataclass
class RunStats:
    """What one call computed and what it read from the cache, summed over all processes."""

    computed_requests: int = 0
    cached_requests: int = 0
    tokens: int = 0  # tokens of the computed requests (see `model_adapter` for what each request type counts)

    def add(self, other: "RunStats") -> None:
        """Accumulate `other` into this."""
        self.computed_requests += other.computed_requests
        self.cached_requests += other.cached_requests
        self.tokens += other.tokens


_written = [0]  # requests this process has committed to the cache, over all calls (for the test hook)


def _maybe_kill(n: int) -> None:
    _written[0] += n
    limit = os.environ.get(KILL_AFTER_ENV)
    if limit and _written[0] >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


def run_batches(world: World, batches: Sequence[B], *, keys: Callable[[B], list[Hashable]],
                compute: Callable[[B], dict[Hashable, Any]], cost: Callable[[B], float],
                tokens: Callable[[B, dict], int], cache: RequestCache | None = None, kind: str = "",
                progress: Any = None) -> tuple[dict[Hashable, Any], RunStats]:
    """Results of all `batches` (by request key, on every process) and the run's statistics.

    `keys(batch)` lists the batch's request keys (JSON-serialisable), `compute(batch)` returns their results,
    `cost(batch)` estimates its work for load balancing, `tokens(batch, results)` counts its tokens for
    throughput; `progress(requests, tokens)` is called after each batch of this process (and
    `progress.set_total(requests)` first, when it has that method).
    """
    owner = assign([cost(b) for b in batches], world.dp_size)
    if hasattr(progress, "set_total"):
        progress.set_total(sum(len(keys(b)) for b, r in zip(batches, owner) if r == world.dp_rank))
    mine: dict[Hashable, Any] = {}
    stats = RunStats()
    for batch, rank in zip(batches, owner):
        if rank != world.dp_rank:
            continue
        batch_keys = keys(batch)
        hits = cache.get_many(kind, batch_keys) if cache is not None else {}
        if len(hits) == len(batch_keys):
            mine.update(hits)
            stats.cached_requests += len(batch_keys)
            n_tokens = 0
        else:  # compute the whole batch, so its composition (and so its floating-point results) never changes
            results = compute(batch)
            mine.update(results)
            n_tokens = tokens(batch, results)
            stats.computed_requests += len(batch_keys)
            stats.tokens += n_tokens
            if cache is not None and world.writes_cache:
                cache.put_many(kind, results)
                _maybe_kill(len(results))
        if progress:
            progress(len(batch_keys), n_tokens)
    merged: dict[Hashable, Any] = {}
    total = RunStats()
    for part, part_stats in world.all_gather((mine, stats)):
        merged.update(part)
        total.add(part_stats)
    if world.tensor_parallel > 1:  # every tensor-parallel peer computed (and counted) the same batches
        total.computed_requests //= world.tensor_parallel
        total.cached_requests //= world.tensor_parallel
        total.tokens //= world.tensor_parallel
    return merged, total
