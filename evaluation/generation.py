"""Batched generation with stop strings, as lm-eval's `HFLM.generate_until` does it (same completions, faster).

Contexts are encoded with the tokenizer defaults (BOS), left-truncated to `max_length - max_gen_toks`, left-padded
with an attention mask; generation stops per row once a stop string (the task's `until` plus the EOS text) appears
in the decoded continuation, and the text is cut at the first occurrence of each stop string in turn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

if TYPE_CHECKING:
    from .model_adapter import CausalLMAdapter


class StopOnStrings(StoppingCriteria):
    """Marks a row done once its decoded continuation contains any stop string."""

    def __init__(self, tokenizer: Any, stops: list[str], prompt_len: int):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        """Per-row done flags."""
        done = []
        for row in input_ids[:, self.prompt_len:]:
            text = self.tokenizer.decode(row[-32:], skip_special_tokens=False)  # stops are short; look at the tail
            done.append(any(s in text for s in self.stops))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def cut_at_stops(text: str, stops: list[str]) -> str:
    """lm-eval's post-processing: keep the text before each stop string, applied one after another."""
    for stop in stops:
        if stop:
            text = text.split(stop)[0]
    return text


def _sampling(kwargs: dict[str, Any], seed: int) -> "Sampling":
    from modeling_llama.decoding import GREEDY, Sampling

    temperature = float(kwargs.get("temperature", 0.0) or 0.0)
    if not (bool(kwargs.get("do_sample", False)) or temperature > 0):
        return GREEDY
    # plain temperature sampling: no top-k/top-p truncation unless asked for
    return Sampling(temperature=temperature or 1.0, top_k=int(kwargs.get("top_k", 0) or 0),
                    top_p=float(kwargs.get("top_p", 1.0) or 1.0), seed=seed)


def encode_contexts(adapter: "CausalLMAdapter", contexts: list[str], max_gen: int) -> list[list[int]]:
    """Context ids as lm-eval encodes them (tokenizer defaults), left-truncated to leave room for `max_gen`."""
    max_ctx = adapter.max_length - max_gen
    if max_ctx <= 0:
        raise ValueError(f"max_gen_toks={max_gen} leaves no room for a context in {adapter.max_length} positions.")
    return [adapter.tok_encode(c)[-max_ctx:] for c in contexts]


def stop_strings(tok: Any, kwargs: dict[str, Any]) -> list[str]:
    """The task's `until` strings plus the EOS text (lm-eval's stop list)."""
    eos_text = tok.decode([tok.eos_token_id], skip_special_tokens=False) if tok.eos_token_id is not None else None
    stops = list(kwargs.get("until", []))
    if eos_text and eos_text not in stops:
        stops.append(eos_text)
    return stops


@torch.no_grad()
def generate_batch_fast(adapter: "CausalLMAdapter", contexts: list[str], kwargs: dict[str, Any],
                        seed: int = 0, sample_indices: list[int] | list[list[int]] | None = None) -> list[list[str]]:
    """`generate_batch` through `modeling_llama.decoding`: static KV cache, compiled decode step, one prefill shared
    by a prompt's samples, finished rows dropped from the batch. Sample i of a context is a function of (seed, context
    tokens, i) only. `sample_indices`: the indices to draw for every context, or one list per context."""
    from modeling_llama.decoding import generate_tokens

    tok = adapter.tokenizer
    max_gen = int(kwargs.get("max_gen_toks", 256))
    stops = [s for s in stop_strings(tok, kwargs) if s]
    samples = sample_indices if sample_indices is not None else int(kwargs.get("n", 1))
    eos = adapter.model.generation_config.eos_token_id if hasattr(adapter.model, "generation_config") else None
    eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None else ())

    def stop(tokens: list[int]) -> bool:  # as StopOnStrings: look at the decoded tail of the continuation
        text = tok.decode(tokens[-32:], skip_special_tokens=False)
        return any(s in text for s in stops)

    sampling = _sampling(kwargs, seed)
    compile = getattr(adapter, "compile_generation", None)
    if compile is None and not sampling.greedy:
        # The auto policy would compile mid-run. Measured on a 2-core CPU ("small" preset, 10 rows): the sampled
        # step compiles in ~11 s and then runs no faster than eager (0.29 vs 0.30 s for 16 tokens); with the
        # earlier sampler (hashed Gumbel noise over the whole vocabulary) it did not finish compiling in 8 minutes.
        # So a sampled task compiles only when asked (compile_generation=True).
        compile = False
    tokens = generate_tokens(adapter.model, encode_contexts(adapter, contexts, max_gen), max_gen, sampling, samples,
                             eos_token_ids=eos_ids, stop=stop if stops else None, pad_token_id=adapter.pad_token_id,
                             compile=compile)
    return [[cut_at_stops(tok.decode(t, skip_special_tokens=True), stops) for t in per_context]
            for per_context in tokens]


@torch.no_grad()
def generate_batch(adapter: "CausalLMAdapter", contexts: list[str], kwargs: dict[str, Any],
                   samples: list[list[int]] | None = None) -> list[list[str]]:
    """Completions of each context: `n` of them, or those with the indices in `samples[p]` for context p (greedy
    unless `do_sample`/`temperature` > 0 ask for sampling).

    LLaMA-family models go through `generate_batch_fast`; any other model through transformers' generate().
    """
    from modeling_llama.decoding import supports_fast_decoding

    if supports_fast_decoding(adapter.model):
        return generate_batch_fast(adapter, contexts, kwargs, seed=int(getattr(adapter, "seed", 0) or 0),
                                   sample_indices=samples)
    if samples is not None and len({len(s) for s in samples}) > 1:  # generate() draws as many for every prompt
        texts = generate_batch(adapter, [c for c, s in zip(contexts, samples) for _ in s], {**kwargs, "n": 1})
        rows = iter(t[0] for t in texts)
        return [[next(rows) for _ in s] for s in samples]
    tok = adapter.tokenizer
    max_gen = int(kwargs.get("max_gen_toks", 256))
    n = len(samples[0]) if samples is not None else int(kwargs.get("n", 1))
    stops = stop_strings(tok, kwargs)
    encoded = encode_contexts(adapter, contexts, max_gen)
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), adapter.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(encoded):
        ids[i, width - len(e):] = torch.tensor(e)
        mask[i, width - len(e):] = 1
    temperature = float(kwargs.get("temperature", 0.0) or 0.0)
    sample = bool(kwargs.get("do_sample", False)) or temperature > 0
    gen_kwargs: dict[str, Any] = {"do_sample": sample, "num_return_sequences": n}
    if sample:  # plain temperature sampling: no top-k/top-p truncation unless asked for
        gen_kwargs.update(temperature=temperature or 1.0, top_k=kwargs.get("top_k", 0), top_p=kwargs.get("top_p", 1.0))
    device = adapter.device  # the first module of a device map (its parameters may sit on disk)
    out = adapter.model.generate(
        input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_gen,
        stopping_criteria=StoppingCriteriaList([StopOnStrings(tok, stops, width)]),
        pad_token_id=adapter.pad_token_id, use_cache=True, **gen_kwargs,
    )
    texts = [cut_at_stops(tok.decode(row[width:], skip_special_tokens=True), stops) for row in out.tolist()]
    return [texts[i * n:(i + 1) * n] for i in range(len(contexts))]
