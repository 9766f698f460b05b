"""Fast autoregressive decoding in gpt-fast style: a preallocated KV cache, one (optionally compiled) decode step.

Why not `model.generate()`: on a CPU (and for small models anywhere) most of a decode step is spent outside the
model's arithmetic: a growing `DynamicCache` (`torch.cat` every step), logits processors, stopping criteria and mask
rebuilding in Python. Here the step is a small pure function of tensors, `decode_step`, over a cache whose shape never
changes, so `torch.compile` turns it into one graph (transformers compiles generate() only on accelerators). Greedy
decoding on CPU also skips the full f32 output projection (greedy_head.py: an fp16 copy, a rigorous error bound and an
exact recompute of the few contenders give the f32 argmax).

Three things the evaluation suite needs on top of that:
- a left-padded batch of prompts (rows sorted by length by the caller) decoded together;
- k samples of one prompt (pass@k, maj1@k) sharing one prefill: the prompt's keys/values are computed once; eager
  sampling on a CPU keeps them once for all k samples (shared_prefix.py), otherwise the cache rows are copied k times;
- sampling that does not depend on the batch: sample i of a prompt is drawn by inverting the softmax's CDF at a
  uniform that is a pure function of (seed, prompt tokens, i, step), computed by integer hashing (`sample_uniform`),
  not by a stateful RNG.
  Decoding sample i alone, or among other prompts and samples, gives the same tokens.

On a CPU, eager decoding also multiplies through oneDNN's pre-packed weights (packed_linear.py), prefills each prompt
on its own (`prefill_each`) and attends over the cache columns written so far (`StaticKVCache.visible`).

The model code knows nothing of this: any causal LM whose forward accepts `cache`, `position_ids`, a 4D
`attention_mask` and `logits_to_keep` works (ours and transformers' Llama); `supports_fast_decoding` says which.
"""

from __future__ import annotations

import contextlib
import hashlib
import weakref
from dataclasses import dataclass
from typing import Callable

import torch

from .greedy_head import CertifiedGreedyHead, greedy_head_for
from .packed_linear import packed_linears
from .shared_prefix import SHARED_PREFIX_ATTENTION, SharedPrefixCache, attention_implementation

# Attention implementations that accept an explicit (B, 1, T, L) mask: bool for sdpa, additive float for eager.
MASKED_ATTENTION = ("sdpa", "eager")


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: greedy when temperature == 0, else softmax(logits / T) within top-k/top-p."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        """True when decoding takes the argmax."""
        return self.temperature <= 0


GREEDY = Sampling()


class StaticKVCache:
    """Keys/values of every layer in preallocated (B, KV heads, L, head_dim) tensors; shapes never change.

    A forward writes its T new keys/values at cache columns `self.columns` (T,), set by the caller. Left-padded rows
    share columns: column j of every row holds that row's j-th input, pads included (the mask hides them).
    Implements the part of transformers' `Cache` API that decoder layers call (`update`, `get_seq_length`).
    """

    is_compileable = True

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]):
        self.keys, self.values = keys, values
        self.columns = torch.zeros(1, dtype=torch.long, device=keys[0].device)
        self.visible = keys[0].shape[2]  # attention reads columns [0, visible): those written so far, in eager steps

    @classmethod
    def for_model(cls, model: torch.nn.Module, batch: int, length: int) -> "StaticKVCache":
        """An empty cache for `batch` rows of `length` positions, in the model's dtype and device."""
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        param = next(model.parameters())
        shape = (batch, config.num_key_value_heads, length, head_dim)
        make = lambda: torch.zeros(shape, dtype=param.dtype, device=param.device)  # noqa: E731
        n = config.num_hidden_layers
        return cls([make() for _ in range(n)], [make() for _ in range(n)])

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Write the new (B, KV, T, hd) keys/values at `self.columns`; return the layer cache's first `visible`
        columns (views)."""
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys.index_copy_(2, self.columns, key)
        values.index_copy_(2, self.columns, value)
        if self.visible < keys.shape[2]:
            return keys[:, :, : self.visible], values[:, :, : self.visible]
        return keys, values

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Only meaningful to callers that pass position_ids themselves (we always do)."""
        return self.keys[0].shape[2]

    def select_rows(self, index: torch.Tensor) -> "StaticKVCache":
        """A new cache with rows `index` (B',): k samples of one prompt, or the rows still decoding."""
        return StaticKVCache([k.index_select(0, index) for k in self.keys],
                             [v.index_select(0, index) for v in self.values])


def supports_fast_decoding(model: torch.nn.Module) -> bool:
    """Whether `model` is a LLaMA-family causal LM whose forward this module can drive (else use generate())."""
    config = getattr(model, "config", None)
    return (getattr(config, "model_type", None) in ("llama_paper", "llama")
            and getattr(config, "_attn_implementation", None) in MASKED_ATTENTION)


def attention_mask(valid: torch.Tensor, columns: torch.Tensor, eager: bool, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, T, L) mask: query at cache column c sees the valid (non-pad) columns <= c."""
    length = valid.shape[1]
    causal = torch.arange(length, device=valid.device)[None, :] <= columns[:, None]  # (T, L)
    keep = valid[:, None, None, :] & causal[None, None]
    if not eager:
        return keep  # sdpa: True = attend
    return torch.zeros(keep.shape, dtype=dtype, device=valid.device).masked_fill(~keep, torch.finfo(dtype).min)


def forward_logits(model: torch.nn.Module, tokens: torch.Tensor, positions: torch.Tensor, columns: torch.Tensor,
                   valid: torch.Tensor, cache: StaticKVCache) -> torch.Tensor:
    """Float32 logits (B, V) of the last input position; writes the inputs' keys/values into `cache`.

    `valid` (B, S) says which of the cache's first S columns hold tokens (not padding); attention reads only those S
    columns, so an eager step passes the columns written so far and a compiled one the whole cache (fixed shapes)."""
    cache.columns, cache.visible = columns, valid.shape[1]
    eager = model.config._attn_implementation == "eager"
    mask = attention_mask(valid, columns, eager, next(model.parameters()).dtype)
    out = model(input_ids=tokens, attention_mask=mask, position_ids=positions, cache=cache,
                use_cache=True, logits_to_keep=1)
    return out.logits[:, -1].float()


def prefill_each(model: torch.nn.Module, prompts: list[list[int]], cache: StaticKVCache, width: int) -> torch.Tensor:
    """Final hidden states (B, D) of each prompt's last token, each prompt run on its own; its keys/values are copied
    right-aligned into columns [width - len, width) of its cache row, where the left-padded layout keeps them.

    Why not one padded batch: on a CPU that computes the padding and, with a mask, every query-key block; alone, a
    prompt has no padding and no mask, so attention takes the kernel's causal path that skips the masked half. For
    gsm8k's 5-shot prompts (1014-1393 tokens, 8 per batch) the prefill took about half the time (benchmarks/RESULTS.md).
    Accelerators keep the batch (their parallelism is the batch)."""
    decoder = model.get_decoder()
    last = []
    for row, prompt in enumerate(prompts):
        out = decoder(input_ids=torch.tensor([prompt], device=cache.keys[0].device), use_cache=True)
        own = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        start = width - len(prompt)
        for layer, computed in enumerate(own.layers):
            cache.keys[layer][row, :, start:width].copy_(computed.keys[0])
            cache.values[layer][row, :, start:width].copy_(computed.values[0])
        last.append(out.last_hidden_state[0, -1])
    return torch.stack(last)


def forward_hidden(model: torch.nn.Module, tokens: torch.Tensor, positions: torch.Tensor, columns: torch.Tensor,
                   valid: torch.Tensor, cache: StaticKVCache) -> torch.Tensor:
    """Final hidden states (B, D) of the last input position (before the output projection); fills `cache` (see
    `forward_logits` for `valid`)."""
    cache.columns, cache.visible = columns, valid.shape[1]
    eager = model.config._attn_implementation == "eager"
    mask = attention_mask(valid, columns, eager, next(model.parameters()).dtype)
    out = model.get_decoder()(input_ids=tokens, attention_mask=mask, position_ids=positions, cache=cache,
                              use_cache=True)
    return out.last_hidden_state[:, -1]


# --- sampling noise: a counter-based hash, so a sample does not depend on which rows share its batch -----------
_MASK63 = (1 << 63) - 1


def _signed(x: int) -> int:
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >> 63 else x


_GOLDEN, _MIX1, _MIX2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _splitmix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 (wrapping arithmetic): a bijective, well-mixed hash."""
    x = x + _GOLDEN
    x = (x ^ _shr(x, 30)) * _MIX1
    x = (x ^ _shr(x, 27)) * _MIX2
    return x ^ _shr(x, 31)


def sample_keys(seed: int, prompt: list[int], sample_indices: list[int]) -> torch.Tensor:
    """(k,) int64 keys naming sample i of this prompt under this seed; each step's uniform derives from them."""
    digest = hashlib.sha256(f"{seed}:{','.join(map(str, prompt))}".encode()).digest()
    base = int.from_bytes(digest[:8], "little") & _MASK63
    return _splitmix64(torch.tensor([base], dtype=torch.long) ^ torch.tensor(sample_indices, dtype=torch.long))


def sample_uniform(keys: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """(B,) uniforms in (0, 1), float64, a pure function of (key, step): one per row and step."""
    row = _splitmix64(_splitmix64(keys) ^ step)
    return (_shr(row, 11).double() + 0.5) * (1.0 / (1 << 53))


DRAW_BLOCK = 256  # tokens per block of the two-level inverse CDF in `draw_from`


def draw_from(scores: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """(B,) tokens drawn from softmax(scores) by inverting its CDF at `uniform` (B,); -inf scores are never drawn.

    One uniform per row instead of Gumbel noise over the whole vocabulary: hashing B x V integers every step cost
    more than the model's forward on a CPU (56% of a sampled step of the "small" preset at batch 16). The CDF is
    inverted in two levels: float32 weights exp(s - max) (each within an ulp of exact), their sums in float64 per
    block of DRAW_BLOCK tokens, the block holding the uniform's share of the total mass, then the token within that
    block (float64 cumulative sums of 256 weights). A float64 cumulative sum over the whole vocabulary, as before,
    cost 4x as much (benchmarks/RESULTS.md) for no better draws: the same tokens up to float rounding of the mass."""
    rows, vocab = scores.shape
    weights = (scores - scores.amax(-1, keepdim=True)).exp_()  # (B, V) float32; 0 where -inf
    blocks = -(-vocab // DRAW_BLOCK)
    if vocab % DRAW_BLOCK:  # zero weights fill the last block
        weights = torch.nn.functional.pad(weights, (0, blocks * DRAW_BLOCK - vocab))
    padded = weights.view(rows, blocks, DRAW_BLOCK)
    mass = padded.sum(-1).double()  # (B, blocks): float32 sums of 256 weights, then float64
    cdf = mass.cumsum(-1)
    target = uniform.to(cdf.dtype) * cdf[:, -1]
    # The block whose mass holds the target; rounding may put the target at the very end: then the last block
    # with any mass (and below, its last token with any weight), never a token of weight 0.
    block = torch.searchsorted(cdf, target[:, None], right=True)[:, 0].minimum(_last_true(mass > 0))
    before = torch.where(block > 0, cdf.gather(1, (block - 1).clamp(min=0)[:, None])[:, 0], 0.0)
    inner = padded[torch.arange(rows, device=scores.device), block].double()  # (B, DRAW_BLOCK)
    last_token = _last_true(inner > 0)
    token = torch.searchsorted(inner.cumsum_(-1), (target - before)[:, None], right=True)[:, 0]
    return block * DRAW_BLOCK + token.minimum(last_token)


def _last_true(flags: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last True of each row of flags (B, N); 0 when none."""
    return (flags * torch.arange(flags.shape[1], device=flags.device)).amax(-1)


def next_tokens(logits: torch.Tensor, sampling: Sampling, keys: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """(B,) next tokens: argmax, or a draw from softmax(logits / T) (within top-k/top-p) at the row's uniform."""
    if sampling.greedy:
        return logits.argmax(-1)
    scores = logits.float() / sampling.temperature
    if sampling.top_k and sampling.top_k < scores.shape[-1]:
        kth = scores.topk(sampling.top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if sampling.top_p < 1.0:  # nucleus: drop the tokens beyond the smallest set holding top_p of the mass
        ordered, order = scores.double().sort(dim=-1, descending=True)
        mass_before = ordered.softmax(-1).cumsum(-1) - ordered.softmax(-1)
        drop = torch.zeros_like(scores, dtype=torch.bool).scatter(-1, order, mass_before >= sampling.top_p)
        scores = scores.masked_fill(drop, float("-inf"))
    return draw_from(scores, sample_uniform(keys, step))


def decode_step(model: torch.nn.Module, tokens: torch.Tensor, positions: torch.Tensor, column: torch.Tensor,
                valid: torch.Tensor, cache: StaticKVCache, sampling: Sampling, keys: torch.Tensor,
                step: torch.Tensor) -> torch.Tensor:
    """One token for every row: tokens (B, 1) at `positions` (B, 1) written at cache `column` (1,) -> (B,)."""
    logits = forward_logits(model, tokens, positions, column, valid, cache)
    return next_tokens(logits, sampling, keys, step)


def decode_hidden(model: torch.nn.Module, tokens: torch.Tensor, positions: torch.Tensor, column: torch.Tensor,
                  valid: torch.Tensor, cache: StaticKVCache) -> torch.Tensor:
    """The greedy path's step without the output projection: tokens (B, 1) -> final hidden states (B, D)."""
    return forward_hidden(model, tokens, positions, column, valid, cache)


_COMPILED: dict[str, Callable] = {}
COMPILE_BACKEND = "inductor"  # tests use "aot_eager" (graph capture without inductor's minutes-long cold build)


def compiled_decode_step(backend: str | None = None) -> Callable:
    """`decode_step` under torch.compile (inductor by default; compiled per model and shape)."""
    backend = backend or COMPILE_BACKEND
    if backend not in _COMPILED:
        # Freezing is asked for (weights folded in as constants, pre-packed for the CPU's kernels), but with torch
        # 2.13 it does not happen here: the generated code (TORCH_LOGS=output_code, checked 2026-12-07) still takes
        # the parameters as graph inputs (dynamo inlines the modules) and multiplies them with extern mm kernels.
        _COMPILED[backend] = torch.compile(decode_step, backend=backend, options=_options(backend), dynamic=None)
    return _COMPILED[backend]


def compiled_decode_hidden(backend: str | None = None) -> Callable:
    """`decode_hidden` under torch.compile, with the options of `compiled_decode_step`."""
    backend = backend or COMPILE_BACKEND
    key = "hidden:" + backend
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(decode_hidden, backend=backend, options=_options(backend), dynamic=None)
    return _COMPILED[key]


def _options(backend: str) -> dict | None:
    """Inductor options for the decode steps.

    `decompose_mm_pass` rewrites a matrix product with one row (batch-1 decoding) and both weight dimensions <= 2048
    (inductor's CPU limits: the layers' projections, not the output projection) into a multiply-and-sum that inductor
    generates and fuses itself. On this AMD CPU MKL's sgemm reads a one-row product's weight at 5-7 GB/s; the
    generated reduction made a `small` step ~30% faster (benchmarks/RESULTS.md). The sums run in another order, so
    logits differ from eager in the last bits, as any compiled graph's do."""
    if backend != "inductor":
        return None
    return {"freezing": True, "post_grad_fusion_options": {"decompose_mm_pass": {}}}


# Certified fp16 output heads (greedy_head.py), one per model, rebuilt when its weight changes.
_HEADS: "weakref.WeakKeyDictionary[torch.nn.Module, CertifiedGreedyHead]" = weakref.WeakKeyDictionary()


def certified_head(model: torch.nn.Module, sampling: Sampling, enabled: bool | None) -> CertifiedGreedyHead | None:
    """The head that picks greedy tokens from an fp16 copy with an exact f32 recompute, or None (full logits).

    Used for greedy decoding of float32 CPU models (enabled None = where it applies; False = never)."""
    if enabled is False or not sampling.greedy:
        return None
    if next(model.parameters()).device.type != "cpu":
        return None  # on accelerators the f32 head is not the bottleneck the same way; keep the full logits
    head = greedy_head_for(model, _HEADS)
    if head is None and enabled:
        raise ValueError("greedy_head=True needs a float32 CPU model with a bias-free nn.Linear output projection "
                         "within fp16 range (and torch's FBGEMM engine); pass greedy_head=None or False.")
    return head


# compile=None ("auto"): decode eagerly until a model has taken this many steps in this process, then compile.
# Compiling costs tens of seconds on a CPU; a short run (a test, a 64-token prompt) never repays it.
AUTO_COMPILE_AFTER_STEPS = 2048
_steps_taken: "weakref.WeakKeyDictionary[torch.nn.Module, int]" = weakref.WeakKeyDictionary()


def use_compiled(model: torch.nn.Module, compile: bool | None, steps: int) -> bool:
    """Whether the next `steps` decode steps of `model` run compiled: True/False as asked, or the auto policy."""
    if compile is not None:
        return compile
    _steps_taken[model] = _steps_taken.get(model, 0) + steps
    return _steps_taken[model] > AUTO_COMPILE_AFTER_STEPS


def left_pad(prompts: list[list[int]], length: int, pad_id: int, device: torch.device):
    """(ids (B, W), valid (B, length) bool, positions (B, W)) for left-padded prompts of width W = longest."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    valid = torch.zeros(len(prompts), length, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        valid[i, width - len(p):] = True
    valid[:, width:] = True  # generated tokens; columns beyond the current step are hidden by causality
    positions = (valid[:, :width].long().cumsum(-1) - 1).clamp(min=0)  # as generate(): pads count from 0
    return ids.to(device), valid.to(device), positions.to(device)


@torch.inference_mode()
def generate_tokens(model: torch.nn.Module, prompts: list[list[int]], max_new_tokens: int,
                    sampling: Sampling = GREEDY, num_samples: int | list[int] | list[list[int]] = 1, *,
                    eos_token_ids: tuple[int, ...] = (), stop: Callable[[list[int]], bool] | None = None,
                    pad_token_id: int = 0, compile: bool | None = None,
                    on_token: Callable[[list[int]], None] | None = None,
                    greedy_head: bool | None = None) -> list[list[list[int]]]:
    """New tokens for `num_samples` samples of each prompt: result[p][j] is the j-th requested sample of prompt p.

    `num_samples` is a count k (samples 0..k-1), the list of sample indices to draw, or one such list per prompt
    (a batch cut by rows: the last samples of one prompt beside the first of the next): sample i of a prompt is the
    same whatever else is decoded alongside it (see `sample_keys`), so a resumed run can draw only missing samples.

    A row stops after an EOS token, or once `stop(row tokens)` is true (the tokens that made it true are kept), or
    after `max_new_tokens`. Prompts are prefilled once, left-padded together; their cache rows are then copied for
    the samples. Rows that finish are dropped from the batch. `on_token` receives each step's tokens (streaming).

    Greedy decoding of a float32 CPU model picks each token with `greedy_head.CertifiedGreedyHead` (the f32 argmax
    from an fp16 copy of the output projection and an exact recompute of the contenders); `greedy_head=False`
    computes the full f32 logits instead.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate_tokens needs at least one prompt, and every prompt needs at least one token.")
    if isinstance(num_samples, int):
        num_samples = list(range(num_samples))
    per_prompt = ([list(i) for i in num_samples] if num_samples and not isinstance(num_samples[0], int)
                  else [list(num_samples)] * len(prompts))
    if len(per_prompt) != len(prompts) or not all(per_prompt):
        raise ValueError("num_samples: give one non-empty list of sample indices per prompt.")
    counts = [len(i) for i in per_prompt]
    device = next(model.parameters()).device
    compiled = use_compiled(model, compile, max_new_tokens)
    # Eager decoding on a CPU multiplies through oneDNN's pre-packed weights (packed_linear.py); a compiled step
    # traces the model's own forward.
    with packed_linears(model, enabled=not compiled and device.type == "cpu"):
        head = certified_head(model, sampling, greedy_head) if all(c == 1 for c in counts) else None
        if head is not None:
            return _greedy_with_head(model, head, prompts, max_new_tokens, pad_token_id, eos_token_ids, stop,
                                     compiled, on_token)
        return _sampled(model, prompts, max_new_tokens, sampling, per_prompt, pad_token_id, eos_token_ids, stop,
                        compiled, on_token)


# Eager sampled decoding on a CPU keeps a prompt's keys/values once for all its samples (shared_prefix.py).
SHARE_PROMPT_CACHE = True


def _sampled(model: torch.nn.Module, prompts: list[list[int]], max_new_tokens: int, sampling: Sampling,
             per_prompt: list[list[int]], pad_token_id: int, eos_token_ids: tuple[int, ...],
             stop: Callable[[list[int]], bool] | None, compiled: bool,
             on_token: Callable[[list[int]], None] | None) -> list[list[list[int]]]:
    """generate_tokens' loop over full logits (sampling, or greedy without the certified head).

    Eager sampling on a CPU keeps each prompt's keys/values once for all its samples (shared_prefix.py); otherwise
    the prompt's cache row is copied for each sample."""
    counts = [len(i) for i in per_prompt]
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    shared = SHARE_PROMPT_CACHE and not compiled and device.type == "cpu" and not sampling.greedy
    cache, valid, logits, positions = _prefill_rows(model, prompts, counts, width, max_new_tokens, pad_token_id,
                                                    shared)
    keys = torch.cat([sample_keys(sampling.seed, p, i) for p, i in zip(prompts, per_prompt)]).to(device)
    step_fn = compiled_decode_step() if compiled else decode_step
    out: list[list[int]] = [[] for _ in range(sum(counts))]
    live = list(range(len(out)))  # output index of each batch row
    token = next_tokens(logits, sampling, keys, torch.tensor(0, device=device))
    position = positions[:, -1:] + 1
    with attention_implementation(model, SHARED_PREFIX_ATTENTION) if shared else contextlib.nullcontext():
        for step in range(max_new_tokens):
            keep = _record(token.tolist(), live, out, eos_token_ids, stop, on_token)
            if not keep or step == max_new_tokens - 1:
                break
            if len(keep) < len(live):  # drop finished rows: later steps cost only what is still decoding
                index = torch.tensor(keep, device=device)
                if shared:
                    cache = cache.select_rows(keep)
                else:
                    cache, valid = cache.select_rows(index), valid[index]
                keys, token, position = keys[index], token[index], position[index]
                live = [live[r] for r in keep]
            count = torch.tensor(step + 1, device=device)
            if shared:
                cache.step = step
                token = _shared_step(model, token[:, None], position, cache, sampling, keys, count)
            else:
                column = torch.tensor([width + step], device=device)
                seen = valid if compiled else valid[:, : width + step + 1]  # eager: the columns written so far
                token = step_fn(model, token[:, None], position, column, seen, cache, sampling, keys, count)
            position = position + 1
    starts = [sum(counts[:p]) for p in range(len(prompts))]
    return [out[start:start + count] for start, count in zip(starts, counts)]


def _prefill_rows(model: torch.nn.Module, prompts: list[list[int]], counts: list[int], width: int,
                  max_new_tokens: int, pad_token_id: int, shared: bool):
    """(cache, valid (rows, L), logits (rows, V), positions (rows, width)) after one prefill per prompt, laid out with
    `counts[p]` rows for prompt p: a SharedPrefixCache when `shared`, else the prompt's cache row copied per row."""
    device = next(model.parameters()).device
    ids, valid, positions = left_pad(prompts, width + max_new_tokens, pad_token_id, device)
    cache = StaticKVCache.for_model(model, len(prompts), width if shared else width + max_new_tokens)
    if device.type == "cpu":
        logits = model.get_output_embeddings()(prefill_each(model, prompts, cache, width)).float()
    else:
        logits = forward_logits(model, ids, positions, torch.arange(width, device=device), valid[:, :width], cache)
    rows = torch.arange(len(prompts), device=device).repeat_interleave(torch.tensor(counts, device=device))
    if shared:
        cache = SharedPrefixCache.from_prefill(cache.keys, cache.values, valid[:, :width], rows.tolist(),
                                               max_new_tokens)
        return cache, valid, logits[rows], positions[rows]
    if any(c != 1 for c in counts):
        return cache.select_rows(rows), valid[rows], logits[rows], positions[rows]
    return cache, valid, logits, positions


def _shared_step(model: torch.nn.Module, tokens: torch.Tensor, positions: torch.Tensor, cache: SharedPrefixCache,
                 sampling: Sampling, keys: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """`decode_step` over a SharedPrefixCache (its attention function switched on by the caller)."""
    out = model(input_ids=tokens, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1,
                shared_prefix=cache)
    return next_tokens(out.logits[:, -1].float(), sampling, keys, step)


def _record(new: list[int], live: list[int], out: list[list[int]], eos_token_ids: tuple[int, ...],
            stop: Callable[[list[int]], bool] | None, on_token: Callable[[list[int]], None] | None) -> list[int]:
    """Append batch row r's new token to out[live[r]]; the rows still decoding (no EOS, `stop` not yet true)."""
    if on_token is not None:
        on_token(new)
    keep = []
    for row, (index, t) in enumerate(zip(live, new)):
        out[index].append(t)
        if not (t in eos_token_ids or (stop is not None and stop(out[index]))):
            keep.append(row)
    return keep


def _greedy_with_head(model: torch.nn.Module, head: CertifiedGreedyHead, prompts: list[list[int]],
                      max_new_tokens: int, pad_token_id: int, eos_token_ids: tuple[int, ...],
                      stop: Callable[[list[int]], bool] | None, compiled: bool,
                      on_token: Callable[[list[int]], None] | None) -> list[list[list[int]]]:
    """generate_tokens' greedy loop with one sample per prompt: the (compiled) stack gives hidden states, `head`
    the tokens. Same stopping and row-dropping rules."""
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids, valid, positions = left_pad(prompts, width + max_new_tokens, pad_token_id, device)
    cache = StaticKVCache.for_model(model, len(prompts), width + max_new_tokens)
    step_fn = compiled_decode_hidden() if compiled else decode_hidden
    checked = False  # whether the compiled step has run with its guards on this batch's tensors and shapes
    out: list[list[int]] = [[] for _ in prompts]
    live = list(range(len(out)))
    token = head.argmax(prefill_each(model, prompts, cache, width))  # the head applies to CPU models only
    position = positions[:, -1:] + 1
    for step in range(max_new_tokens):
        keep = _record(token.tolist(), live, out, eos_token_ids, stop, on_token)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(live):
            index = torch.tensor(keep, device=device)
            cache, valid, token, position = cache.select_rows(index), valid[index], token[index], position[index]
            live = [live[r] for r in keep]
            checked = False
        column = torch.tensor([width + step], device=device)
        seen = valid if compiled else valid[:, : width + step + 1]
        with skipping_guards(compiled and checked):
            hidden = step_fn(model, token[:, None], position, column, seen, cache)
        checked = True
        token = head.argmax(hidden)
        position = position + 1
    return [[tokens] for tokens in out]


def skipping_guards(skip: bool):
    """A context in which torch.compile'd code runs without re-evaluating dynamo's guards (when `skip`).

    Between two decode steps of one batch nothing the guards check changes: the same model, cache tensors, shapes and
    dtypes; only the values of the small token/position/column tensors. Evaluating the guards (every parameter, module
    attribute and config field the graph read) costs ~0.4 ms a step on a CPU: 10-15% of a `small` step. So the first
    step of each batch shape runs guarded (it compiles or picks the right graph) and the next ones skip the check
    (torch's `skip_guard_eval_unsafe` stance: it still tells apart the graphs already compiled).
    """
    return torch.compiler.set_stance(skip_guard_eval_unsafe=True) if skip else contextlib.nullcontext()
