"""lm-eval's three request types for any Hugging Face causal LM: loglikelihood, loglikelihood_rolling, generate_until.

Tokenization is exactly lm-evaluation-harness 0.4.13's `HFLM` (`TemplateLM._encode_pair`, `HFLM.tok_encode`):
trailing whitespace of the context moves to the continuation; context and context+continuation are encoded with
the tokenizer's default special tokens (BOS in front for LLaMA, not added twice when the text already starts with
it) and the continuation is `whole[len(ctx):]`; an empty context becomes the prefix token (BOS, else EOS) with the
continuation encoded without special tokens; inputs longer than the model are truncated from the left.
Scoring lives in `prefix_scoring.PrefixScorer` (shared contexts computed once, float32 log-softmax).

Every request type is planned into batches first, then run by `distributed.run_batches`: with several processes
each computes its share of the batches, with `--cache` batches already computed are read back, and the results are
the same either way (a batch's composition never depends on the number of processes or on the cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import torch

from .distributed import RunStats, World, run_batches
from .generation import generate_batch
from .prefix_scoring import PrefixScorer, input_device
from .request_cache import RequestCache
from .throughput import Meter, Progress

DEFAULT_MAX_LENGTH = 2048
DEFAULT_MAX_GEN_TOKS = 256


def resolve_max_length(config: Any, tokenizer: Any) -> int:
    """The context length, looked up as lm-eval does: config, then tokenizer, then 2048."""
    for cfg in (getattr(config, "text_config", None), config):
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(cfg, attr, None) if cfg is not None else None
            if value:
                return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    if limit and limit < int(1e29):  # transformers' "unset" sentinel is 1e30
        return int(limit)
    return DEFAULT_MAX_LENGTH


def _auto_batch_size(device: torch.device) -> int:
    # On CPU a large batch only adds padding; on an accelerator start big and halve on out-of-memory.
    return 16 if device.type == "cpu" else 128


class CausalLMAdapter:
    """Evaluates one causal LM (a model object plus its tokenizer) with lm-eval's request semantics."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, batch_size: int | str = "auto",
                 max_length: int | None = None, add_bos_token: bool | None = None, prefix_token_id: int | None = None,
                 share_context: bool = True, progress: bool = True, name: str | None = None, seed: int = 1234,
                 compile_generation: bool | None = None):
        self.model = model.eval()
        self.seed = seed  # sampled generations: sample i of a context is a function of (seed, context, i)
        self.compile_generation = compile_generation  # None: compile the decode step once a run is long enough
        self.tokenizer = tokenizer
        self.max_length = max_length or resolve_max_length(getattr(model, "config", None), tokenizer)
        self.add_bos_token = add_bos_token
        self.progress = progress
        self.name = name or getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
        if prefix_token_id is None:
            prefix_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.prefix_token_id = prefix_token_id
        device = next(model.parameters()).device
        self.batch_size = _auto_batch_size(device) if batch_size == "auto" else int(batch_size)
        self.auto_batch = batch_size == "auto"
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.pad_token_id = pad
        self.scorer = PrefixScorer(model, max_length=self.max_length, batch_size=self.batch_size,
                                   share_context=share_context, pad_token_id=pad)
        self.world = World()  # set by the CLI when launched as several processes
        self.cache: RequestCache | None = None
        self.source: str | None = None  # the folder the model was loaded from (for the cache's fingerprint)
        self.meter = Meter()

    @property
    def device(self) -> torch.device:
        """Where input ids go."""
        return input_device(self.model)

    def placement(self) -> dict[str, Any]:
        """Where the model lives: its device map (if spread) and how many parameters are tensor-parallel shards."""
        from torch.distributed.tensor import DTensor

        device_map = getattr(self.model, "hf_device_map", None)
        return {"device_map": {k: str(v) for k, v in device_map.items()} if device_map else None,
                "sharded_parameters": sum(isinstance(p, DTensor) for p in self.model.parameters())}

    def enable_cache(self, folder: str, protocol: str) -> RequestCache:
        """Read and write results in the request cache at `folder`, scoped to this model and `protocol`."""
        from .fingerprint import local_folder, model_fingerprint

        cache = RequestCache(folder)
        settings = {"max_length": self.max_length, "add_bos_token": self.add_bos_token,
                    "prefix_token_id": self.prefix_token_id}
        src = local_folder(self.source) if self.source else None
        cache.bind(model_fingerprint(self.model, self.tokenizer, src, settings, cache), protocol)
        self.cache = cache
        return cache

    @classmethod
    def from_pretrained(cls, path: str, *, dtype: str = "float32", device: str | None = None,
                        trust_remote_code: bool = True, device_map: str | None = None,
                        max_memory: dict[int | str, str] | None = None, offload_folder: str | None = None,
                        tensor_parallel: int = 1, **kwargs: Any) -> "CausalLMAdapter":
        """Load `path` (a folder or Hub id) with AutoModelForCausalLM/AutoTokenizer.

        `device_map` ("auto", "balanced", ...; with `max_memory` per device and `offload_folder` for what goes to
        disk) spreads the layers over devices; `tensor_parallel` N shards every layer over N processes (run under
        torchrun) with transformers' DistributedConfig."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:  # registers our own model type with the Auto classes when this package is installed
            import modeling_llama  # noqa: F401
        except ImportError:
            pass
        if os.path.sep in path and not os.path.isdir(path):
            raise FileNotFoundError(f"Model folder {path} does not exist; pass a saved model folder or a Hub id.")
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        load: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
        if device_map is not None and tensor_parallel > 1:
            raise ValueError("--device-map and --tensor-parallel are exclusive: choose one way to split the model.")
        if device_map is not None:
            load.update(device_map=device_map, max_memory=max_memory, offload_folder=offload_folder)
        elif tensor_parallel > 1:
            from transformers.distributed import DistributedConfig

            load["distributed_config"] = DistributedConfig(tp_size=tensor_parallel)
        model = AutoModelForCausalLM.from_pretrained(path, **load)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        if device_map is None and tensor_parallel == 1:
            model = model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        adapter = cls(model, tokenizer, name=path, **kwargs)
        adapter.source = path
        return adapter

    # --- tokenization (lm-eval HFLM) ------------------------------------------------------------------------
    def tok_encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        """Token ids with the tokenizer's default special tokens, unless told otherwise (lm-eval `tok_encode`)."""
        kwargs: dict[str, bool] = {}
        if add_special_tokens is not None:
            kwargs["add_special_tokens"] = add_special_tokens
        elif self.add_bos_token is not None:
            kwargs["add_special_tokens"] = self.add_bos_token
        if add_special_tokens is None:
            bos_text = self.tokenizer.decode(self.prefix_token_id)
            if bos_text and text.startswith(bos_text):  # never a second BOS
                kwargs["add_special_tokens"] = False
        return list(self.tokenizer.encode(text, **kwargs))

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids) exactly as lm-eval builds a loglikelihood request."""
        if context == "":
            cont = self.tok_encode(continuation, add_special_tokens=False)
            if cont and cont[0] == self.prefix_token_id:
                return cont[:1], cont[1:]
            return [self.prefix_token_id], cont
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.tok_encode(context + continuation)
        ctx = self.tok_encode(context)
        cont = whole[len(ctx):]
        if not cont:
            raise ValueError(
                f"The continuation {continuation!r} tokenizes to nothing after the context {context[-40:]!r} "
                "(its tokens merged into the context's); use a target delimiter that starts a new token."
            )
        return ctx, cont

    # --- request types --------------------------------------------------------------------------------------
    def _run(self, batches: list, desc: str, kind: str, **fns: Any) -> dict:
        """Run planned batches (this process's share; cache first), count them in `self.meter`."""
        progress = Progress(0, desc, self.progress and self.world.is_main)
        start = time.perf_counter()
        try:
            results, stats = run_batches(self.world, batches, cache=self.cache, kind=kind, progress=progress, **fns)
        finally:
            progress.close()
        self.meter.add(stats, time.perf_counter() - start)
        return results

    def _score(self, encoded: list[tuple[list[int], list[int]]], desc: str) -> list[tuple[float, bool]]:
        while True:
            try:
                return self._score_once(encoded, desc)
            except torch.OutOfMemoryError:
                if not self.auto_batch or self.scorer.batch_size == 1 or self.world.size > 1:
                    raise
                self.scorer.batch_size //= 2  # --batch-size auto: halve and retry
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    def _score_once(self, encoded: list[tuple[list[int], list[int]]], desc: str) -> list[tuple[float, bool]]:
        keys, batches = self.scorer.plan(encoded)

        def rows(batch):
            return [(g.prefix, step, cont) for g in batch for step, cont in g.rows]

        def n_tokens(batch, _results=None):
            return sum(len(p) + len(s) for p, s, _ in rows(batch))

        results = self._run(batches, desc, "loglikelihood", keys=rows, compute=self.scorer.run_batch,
                            cost=n_tokens, tokens=n_tokens)
        return [(float(results[k][0]), bool(results[k][1])) for k in keys]

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        """`(log p(continuation | context), is_greedy)` for each `(context, continuation)`."""
        encoded = [self.encode_pair(c, k) for c, k in requests]
        return self._score(encoded, "loglikelihood")

    def loglikelihood_rolling(self, texts: list[str], add_special_tokens: bool | None = None) -> list[float]:
        """Total log-likelihood of each text, scored in disjoint windows of `max_length` tokens (lm-eval rolling).

        As in lm-eval, the text is encoded with the tokenizer defaults (so a LLaMA BOS is itself predicted after
        the prefix token); pass `add_special_tokens=False` to score only the text's own tokens.
        """
        windows, owner = [], []
        for i, text in enumerate(texts):
            tokens = self.tok_encode(text, add_special_tokens=add_special_tokens)
            for ctx, pred in rolling_windows(tokens, self.prefix_token_id, self.max_length):
                windows.append((ctx, pred))
                owner.append(i)
        scores = self._score(windows, "loglikelihood_rolling")
        totals = [0.0] * len(texts)
        for i, (ll, _) in zip(owner, scores):
            totals[i] += ll
        return totals

    def _plan_generation(self, requests: list[tuple[str, dict[str, Any]]]) -> list["GenBatch"]:
        # Rows are (prompt, sample index) pairs, longest prompts first within each set of generation settings, cut
        # into batches of `batch_size` rows: batches stay full whatever `n` is (a prompt's samples may span two
        # batches, each prefilling it once), and a batch holds prompts of similar length (little padding).
        lengths = [len(self.tok_encode(c)) for c, _ in requests]
        by_kwargs: dict[str, list[int]] = {}
        for i in sorted(range(len(requests)), key=lambda i: -lengths[i]):
            by_kwargs.setdefault(json.dumps(requests[i][1], sort_keys=True, default=str), []).append(i)
        batches = []
        for idx in by_kwargs.values():
            kwargs = requests[idx[0]][1]
            rows = [(i, j) for i in dict.fromkeys(idx) for j in range(int(kwargs.get("n", 1)))]
            for start in range(0, len(rows), self.batch_size):
                per_prompt: dict[int, list[int]] = {}
                for i, j in rows[start: start + self.batch_size]:
                    per_prompt.setdefault(i, []).append(j)
                batches.append(GenBatch(kwargs, [requests[i][0] for i in per_prompt], list(per_prompt.values()),
                                        sum(lengths[i] for i in per_prompt)))
        return batches

    def _sample_keys(self, batch: "GenBatch") -> list[tuple]:
        # A sampled generation is identified by (request, seed, sample index); a greedy one by the request alone.
        settings = json.dumps({k: v for k, v in batch.kwargs.items() if k != "n"}, sort_keys=True, default=str)
        seed = self.seed if batch.sampled else None
        return [(c, settings, seed, j) for c, js in zip(batch.contexts, batch.samples) for j in js]

    def _generate(self, batch: "GenBatch") -> dict[tuple, str]:
        keys = self._sample_keys(batch)
        if batch.sampled:  # the batch's own seed: the same samples whichever process runs it, and on a rerun
            text = json.dumps([self.seed, keys], default=str).encode("utf-8")
            torch.manual_seed(int(hashlib.sha256(text).hexdigest()[:15], 16))
        texts = generate_batch(self, batch.contexts, batch.kwargs, batch.samples)
        return dict(zip(keys, (t for per_context in texts for t in per_context)))

    def _generated_tokens(self, batch: "GenBatch", results: dict) -> int:
        return sum(len(self.tok_encode(t, add_special_tokens=False)) for t in results.values())

    def generate_until(self, requests: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
        """Completions of each context, cut at the first stop string; `n` samples per request (default 1)."""
        batches = self._plan_generation(requests)

        def cost(b: GenBatch) -> int:  # prompt tokens plus the most tokens the samples may generate
            return b.prompt_tokens + b.rows * int(b.kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS))

        results = self._run(batches, "generate_until", "generate_until", keys=self._sample_keys,
                            compute=self._generate, tokens=self._generated_tokens, cost=cost)
        out = []
        for context, kwargs in requests:
            settings = json.dumps({k: v for k, v in kwargs.items() if k != "n"}, sort_keys=True, default=str)
            sampled = _is_sampled(kwargs)
            out.append([results[(context, settings, self.seed if sampled else None, j)]
                        for j in range(int(kwargs.get("n", 1)))])
        return out


def _is_sampled(kwargs: dict[str, Any]) -> bool:
    return bool(kwargs.get("do_sample", False)) or float(kwargs.get("temperature", 0.0) or 0.0) > 0


@dataclass
class GenBatch:
    """Rows generated together with the same settings: `samples[p]` are the sample indices drawn for `contexts[p]`."""

    kwargs: dict[str, Any]
    contexts: list[str]
    samples: list[list[int]]
    prompt_tokens: int

    @property
    def rows(self) -> int:
        """How many completions the batch decodes."""
        return sum(len(s) for s in self.samples)

    @property
    def sampled(self) -> bool:
        """Whether these generations are sampled (and so depend on the seed)."""
        return _is_sampled(self.kwargs)


def rolling_windows(tokens: list[int], prefix_token: int, max_length: int) -> list[tuple[list[int], list[int]]]:
    """lm-eval's `get_rolling_token_windows(context_len=1)` + `make_disjoint_window`: (context, predicted) pairs."""
    if not tokens:
        return []
    windows = []
    first = min(max_length, len(tokens))
    windows.append(([prefix_token] + tokens[: first - 1], tokens[:first]))
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, max_length)
        end = done + n
        windows.append((tokens[end - max_length - 1: end - 1], tokens[end - n: end]))
        done = end
    # Disjoint: the context keeps only the tokens before the predicted ones.
    return [(ctx[: len(ctx) - (len(pred) - 1)], pred) for ctx, pred in windows]
