"""Log-likelihood of token continuations, computing each shared context once.

lm-eval scores every (context, continuation) pair as its own sequence `(ctx + cont)[-(L+1):][:-1]` and takes the
log-softmax of the last len(cont) positions. The result depends only on those tokens, so we split each input into
a *prefix* (everything before the last len(cont) inputs; identical for all choices of a document) and a *step*
(the last len(cont) inputs). Prefixes are run once per batch of documents with the KV cache on and no logits (the
base model alone, or `logits_to_keep=1`); the cache rows are then repeated per choice and the steps run on top of
it, right-padded, with a 2-D attention mask that hides the prefix padding. Only the continuation positions reach the
vocabulary projection (when the model's logits are its output embedding applied to the base model's last hidden
state, which is checked on a tiny input; otherwise the step positions), 128 at a time on a CPU, and the log-softmax
is in float32. Identical requests are scored once. On a CPU the model's linear layers multiply through oneDNN's
pre-packed weights for the duration of a batch (modeling_llama/packed_linear.py).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from modeling_llama.packed_linear import packed_linears


@dataclass
class _Group:
    prefix: tuple[int, ...]
    rows: list[tuple[tuple[int, ...], tuple[int, ...]]]  # (step inputs, targets)


def split_request(ctx: list[int], cont: list[int], max_length: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(prefix, step) of the harness input `(ctx+cont)[-(max_length+1):][:-1]`; the step predicts `cont`."""
    if not ctx or not cont:
        raise ValueError("Both the context and the continuation must have at least one token.")
    if len(cont) > max_length:
        raise ValueError(f"A continuation of {len(cont)} tokens exceeds the model's maximum length {max_length}.")
    full = (list(ctx) + list(cont))[-(max_length + 1):]
    n = len(cont)
    return tuple(full[: -(n + 1)]), tuple(full[-(n + 1):-1])


class PrefixScorer:
    """Scores `(context_tokens, continuation_tokens)` pairs with one forward pass per shared prefix."""

    def __init__(self, model: torch.nn.Module, *, max_length: int, batch_size: int, share_context: bool = True,
                 pad_token_id: int = 0):
        self.model = model
        self.max_length = max_length
        self.batch_size = max(1, int(batch_size))
        params = inspect.signature(model.forward).parameters
        self.cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self.keeps_logits = "logits_to_keep" in params
        self.share_context = share_context and self.cache_kwarg in params
        self.pad = pad_token_id
        self.split_head = False
        self.split_head = self._head_is_separable()

    @torch.no_grad()
    def _head_is_separable(self) -> bool:
        """True when logits == output_embeddings(base_model(...).last_hidden_state) for this model (checked on a
        tiny input): then only the continuation positions go through the vocabulary projection."""
        head, base = self.model.get_output_embeddings(), getattr(self.model, "base_model", None)
        if head is None or base is None or base is self.model:
            return False
        ids = torch.tensor([[1, 5, 9, 13]], device=self.device) % self.model.config.vocab_size
        try:
            full = self.model(input_ids=ids, use_cache=False).logits
            split = head(base(input_ids=ids, use_cache=False).last_hidden_state)
        except Exception:  # an unusual architecture: keep the plain path
            return False
        return split.shape == full.shape and bool(torch.allclose(split, full, rtol=1e-4, atol=1e-5))

    @property
    def device(self) -> torch.device:
        """Where inputs go (see `input_device`)."""
        return input_device(self.model)

    def plan(self, requests: list[tuple[list[int], list[int]]]) -> tuple[list[tuple], list[list[_Group]]]:
        """(one key per request, the batches of groups that compute them); deterministic in the request list, so
        any process that plans the same requests gets the same batches (and so the same floating-point results)."""
        groups: dict[tuple[int, ...], _Group] = {}
        keys = []
        for ctx, cont in requests:
            prefix, step = split_request(ctx, cont, self.max_length)
            if not self.share_context:
                prefix, step = (), prefix + step  # plain harness layout: the whole input in one pass
            key = (prefix, step, tuple(cont))
            keys.append(key)
            # Requests without a shared prefix are independent rows; the rest group by their prefix.
            group = groups.setdefault(prefix if prefix else key, _Group(prefix, []))
            if (step, tuple(cont)) not in group.rows:
                group.rows.append((step, tuple(cont)))
        # Longest first (as lm-eval), so the first batch shows the peak memory.
        ordered = sorted(groups.values(), key=lambda g: -(len(g.prefix) + max(len(s) for s, _ in g.rows)))
        return keys, list(self._batches(ordered))

    def run_batch(self, batch: list[_Group]) -> dict[tuple, tuple[float, bool]]:
        """Scores of one planned batch, by request key."""
        results = {}
        with packed_linears(self.model):  # on a CPU: the products through oneDNN's pre-packed weights
            scored = self._score_batch(batch)
        for g, res in zip(batch, scored):
            for (step, cont), r in zip(g.rows, res):
                results[(g.prefix, step, cont)] = r
        return results

    def score(self, requests: list[tuple[list[int], list[int]]],
              progress: Callable[[int], None] | None = None) -> list[tuple[float, bool]]:
        """`(sum of log p(cont | ctx), all continuation tokens greedy)` per request, in request order."""
        keys, batches = self.plan(requests)
        results: dict[tuple, tuple[float, bool]] = {}
        for batch in batches:
            results.update(self.run_batch(batch))
            if progress:
                progress(sum(len(g.rows) for g in batch))
        return [results[k] for k in keys]

    def _batches(self, groups: list[_Group]) -> Iterable[list[_Group]]:
        batch, rows = [], 0
        for g in groups:
            if batch and rows + len(g.rows) > self.batch_size:
                yield batch
                batch, rows = [], 0
            batch.append(g)
            rows += len(g.rows)
        if batch:
            yield batch

    @torch.no_grad()
    def _score_batch(self, batch: list[_Group]) -> list[list[tuple[float, bool]]]:
        device = self.device
        n_prefix = max(len(g.prefix) for g in batch)
        row_group, steps, targets = [], [], []
        for gi, g in enumerate(batch):
            for step, cont in g.rows:
                row_group.append(gi)
                steps.append(step)
                targets.append(cont)
        n_step = max(len(s) for s in steps)
        step_ids = torch.full((len(steps), n_step), self.pad, dtype=torch.long)
        for r, s in enumerate(steps):
            step_ids[r, : len(s)] = torch.tensor(s)
        kwargs = {"use_cache": False}
        if n_prefix:
            # Right padding needs no mask here: causal attention never lets a real token see later padding.
            prefix_ids = torch.full((len(batch), n_prefix), self.pad, dtype=torch.long)
            for gi, g in enumerate(batch):
                prefix_ids[gi, : len(g.prefix)] = torch.tensor(g.prefix, dtype=torch.long)
            if self.split_head:  # the prefix's keys/values only: no vocabulary projection at all
                out = self.model.base_model(input_ids=prefix_ids.to(device), use_cache=True)
            else:
                extra = {"logits_to_keep": 1} if self.keeps_logits else {}
                out = self.model(input_ids=prefix_ids.to(device), use_cache=True, **extra)
            cache = out["cache"] if "cache" in out else out["past_key_values"]
            cache = _select_rows(cache, torch.tensor(row_group, device=device))
            mask = torch.zeros(len(steps), n_prefix + n_step, dtype=torch.long)
            lengths = torch.tensor([len(batch[gi].prefix) for gi in row_group])
            mask[:, :n_prefix] = (torch.arange(n_prefix)[None, :] < lengths[:, None]).long()
            mask[:, n_prefix:] = (torch.arange(n_step)[None, :] < torch.tensor([len(s) for s in steps])[:, None]).long()
            kwargs = {
                self.cache_kwarg: cache,
                "attention_mask": mask.to(device),
                "position_ids": (lengths[:, None] + torch.arange(n_step)[None, :]).to(device),
            }
        # The continuation positions: the last n of each row's step inputs (never the right padding).
        spans = [(len(step) - len(cont), len(step)) for step, cont in zip(steps, targets)]
        if self.split_head:
            hidden = self.model.base_model(input_ids=step_ids.to(device), **kwargs).last_hidden_state
            rows = torch.cat([torch.full((b - a,), r) for r, (a, b) in enumerate(spans)]).to(device)
            cols = torch.cat([torch.arange(a, b) for a, b in spans]).to(device)
            flat, project = hidden[rows, cols], self.model.get_output_embeddings()
        else:
            logits = self.model(input_ids=step_ids.to(device), **kwargs).logits
            flat, project = torch.cat([logits[r, a:b] for r, (a, b) in enumerate(spans)]), None
        tgt = torch.tensor([t for cont in targets for t in cont], device=flat.device)
        token_ll, hits = _score_positions(flat, tgt, project)
        out: list[list[tuple[float, bool]]] = [[] for _ in batch]
        start = 0
        for r, cont in enumerate(targets):
            end = start + len(cont)
            out[row_group[r]].append((token_ll[start:end].sum().item(), all(hits[start:end])))
            start = end
        return out


# Continuation positions projected and scored together: (128, V) float32 logits (16 MB for LLaMA's 32000 tokens) are
# reduced while still in the CPU's cache instead of written to memory whole and read back twice (log-softmax, argmax):
# the head plus its log-softmax then cost about the projection alone (benchmarks/RESULTS.md, 2026-12-08).
SCORED_ROWS = 128


def _score_positions(flat: torch.Tensor, targets: torch.Tensor,
                     project: Callable[[torch.Tensor], torch.Tensor] | None) -> tuple[torch.Tensor, list[bool]]:
    """(log p(target) per position (N,), whether each target is the argmax) of `flat` (N, D) hidden states through
    `project`, or (N, V) logits when `project` is None; float32 log-softmax, row by row as a per-request call."""
    lls, hits = [], []
    rows = SCORED_ROWS if flat.device.type == "cpu" else max(1, len(flat))  # accelerators: one call
    for start in range(0, len(flat), rows):
        chunk, tgt = flat[start:start + rows], targets[start:start + rows]
        lp = torch.log_softmax((project(chunk) if project is not None else chunk).float(), dim=-1)
        lls.append(lp.gather(1, tgt[:, None])[:, 0])
        hits.append(lp.argmax(-1) == tgt)
    return torch.cat(lls), torch.cat(hits).tolist()


def input_device(model: torch.nn.Module) -> torch.device:
    """The device input ids go to: that of the first module of a `device_map` (disk offload executes on the CPU
    here), else that of the first parameter."""
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        first = next(iter(device_map.values()))
        if isinstance(first, int):
            return torch.device("cuda", first)
        return torch.device("cpu" if first == "disk" else first)
    return next(model.parameters()).device


def _select_rows(cache, index: torch.Tensor):
    """Repeat/select batch rows of a KV cache (a transformers `Cache` or legacy tuples)."""
    if hasattr(cache, "reorder_cache"):
        cache.reorder_cache(index)
        return cache
    return tuple(tuple(t.index_select(0, index) for t in layer) for layer in cache)
