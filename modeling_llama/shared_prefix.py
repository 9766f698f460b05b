"""Attention over a prompt's keys/values shared by all its samples: read once per decode step, not once per sample.

Why: pass@k and maj1@k decode k samples of one prompt (the paper: HumanEval pass@100 from 200 samples at T=0.8, GSM8k
maj1@k). After the one prefill, every sample attends to the same prompt keys/values at every step. With those copied
into every sample's cache row (what generate() does for num_return_sequences, and what decoding.py did), each step
reads the prompt's cache once per sample, and on a CPU a decode step is bound by such reads (attention over the cache
ran at ~10 GB/s, the memory's speed, in benchmarks/RESULTS.md). Here the prompt's keys/values are kept once per
prompt, and each step multiplies all of that prompt's queries by them in one product, then by each row's own
generated columns, with one float32 softmax over both parts: attention over [prompt, own tokens], as SDPA computes
it, within float rounding.

`SharedPrefixCache` holds both parts; `shared_prefix_attention` is the attention function, registered with
transformers' `AttentionInterface` as SHARED_PREFIX_ATTENTION and switched on for the decode steps by
`decoding._sampled` (`attention_implementation`), so the model code knows nothing of it (ours and transformers'
Llama alike: their attention modules look the function up by name and pass on the forward's keyword arguments).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from transformers import AttentionInterface

SHARED_PREFIX_ATTENTION = "llama_paper_shared_prefix"


class SharedPrefixCache:
    """Per layer: prompt keys/values (P, KV, W, hd), once per prompt, and each row's generated ones (R, KV, N, hd).

    Rows are grouped by prompt in order (`row_prompt` non-decreasing), as `decoding` lays out a prompt's samples;
    `prefix_valid` (P, W) marks each prompt's real columns (prompts are left-padded to W). A decode step writes its
    keys/values at own column `step` (set by the caller); `update` returns the own columns [0, step] to attend over.
    """

    is_compileable = False

    def __init__(self, prefix_keys: list[torch.Tensor], prefix_values: list[torch.Tensor],
                 prefix_valid: torch.Tensor, row_prompt: list[int], own_keys: list[torch.Tensor],
                 own_values: list[torch.Tensor]):
        if any(b < a for a, b in zip(row_prompt, row_prompt[1:])):
            raise ValueError("SharedPrefixCache needs the rows grouped by prompt (row_prompt non-decreasing).")
        self.prefix_keys, self.prefix_values, self.prefix_valid = prefix_keys, prefix_values, prefix_valid
        self.prefix_bias = torch.zeros(prefix_valid.shape, dtype=prefix_keys[0].dtype,
                                       device=prefix_valid.device).masked_fill(~prefix_valid, float("-inf"))
        self.row_prompt = row_prompt
        self.own_keys, self.own_values = own_keys, own_values
        self.step = 0
        self.segments = []  # (prompt, first row, end row) of each run of rows sharing a prompt
        for row in range(len(row_prompt)):
            if row == 0 or row_prompt[row] != row_prompt[row - 1]:
                self.segments.append([row_prompt[row], row, row + 1])
            else:
                self.segments[-1][2] = row + 1

    @classmethod
    def from_prefill(cls, keys: list[torch.Tensor], values: list[torch.Tensor], prefix_valid: torch.Tensor,
                     row_prompt: list[int], new_tokens: int) -> "SharedPrefixCache":
        """A cache over a prefilled (P, KV, W, hd) prompt cache, with room for `new_tokens` own columns per row."""
        shape = (len(row_prompt), keys[0].shape[1], new_tokens, keys[0].shape[3])
        make = lambda: torch.zeros(shape, dtype=keys[0].dtype, device=keys[0].device)  # noqa: E731
        return cls(keys, values, prefix_valid, row_prompt, [make() for _ in keys], [make() for _ in keys])

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Write the step's (R, KV, 1, hd) keys/values at own column `step`; return own columns [0, step]."""
        own_k, own_v = self.own_keys[layer_idx], self.own_values[layer_idx]
        own_k[:, :, self.step] = key[:, :, 0]
        own_v[:, :, self.step] = value[:, :, 0]
        return own_k[:, :, : self.step + 1], own_v[:, :, : self.step + 1]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Columns seen by a row (prompt width + own columns); callers pass position ids themselves."""
        return self.prefix_keys[0].shape[2] + self.step

    def select_rows(self, index: list[int]) -> "SharedPrefixCache":
        """The rows `index` (still grouped by prompt): the rows still decoding. The prompt part is kept as is."""
        rows = torch.tensor(index, device=self.own_keys[0].device)
        kept = SharedPrefixCache(self.prefix_keys, self.prefix_values, self.prefix_valid,
                                 [self.row_prompt[i] for i in index],
                                 [k.index_select(0, rows) for k in self.own_keys],
                                 [v.index_select(0, rows) for v in self.own_values])
        kept.step = self.step
        return kept


def shared_prefix_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                            shared_prefix: SharedPrefixCache | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """One decode step's attention: query (R, H, 1, hd) over the prompt's shared columns and the row's own `key`/
    `value` (R, KV, t, hd); returns (R, 1, H, hd) as transformers' attention functions do."""
    if shared_prefix is None or query.shape[2] != 1:
        raise ValueError("shared_prefix_attention serves one-token decode steps with a SharedPrefixCache passed as "
                         "`shared_prefix=`; use sdpa or eager attention for anything else.")
    rows, heads, _, head_dim = query.shape
    kv = key.shape[1]
    group = heads // kv  # query heads per key/value head (GQA)
    layer = module.layer_idx
    prefix_k, prefix_v = shared_prefix.prefix_keys[layer], shared_prefix.prefix_values[layer]
    width = prefix_k.shape[2]
    q = (query * scaling).reshape(rows, kv, group, head_dim)  # (R, KV, G, hd)
    own_scores = torch.matmul(q, key.transpose(-1, -2))  # (R, KV, G, t)
    out = torch.empty(rows, kv, group, head_dim, dtype=query.dtype, device=query.device)
    for prompt, start, end in shared_prefix.segments:
        n = end - start
        qs = q[start:end].transpose(0, 1).reshape(kv, n * group, head_dim)  # the prompt's queries, per KV head
        prefix_scores = torch.matmul(qs, prefix_k[prompt].transpose(-1, -2))  # (KV, n*G, W): one read of the prompt
        prefix_scores = prefix_scores.view(kv, n, group, width).transpose(0, 1) + shared_prefix.prefix_bias[prompt]
        weights = torch.cat([prefix_scores, own_scores[start:end]], dim=-1).softmax(-1, dtype=torch.float32)
        weights = weights.to(query.dtype)
        prefix_w = weights[..., :width].transpose(0, 1).reshape(kv, n * group, width)
        from_prefix = torch.matmul(prefix_w, prefix_v[prompt]).view(kv, n, group, head_dim).transpose(0, 1)
        out[start:end] = from_prefix + torch.matmul(weights[..., width:], value[start:end])
    return out.view(rows, heads, head_dim)[:, None], None


AttentionInterface.register(SHARED_PREFIX_ATTENTION, shared_prefix_attention)


@contextlib.contextmanager
def attention_implementation(model: torch.nn.Module, name: str) -> Iterator[None]:
    """Within the block, the model's attention modules use the registered attention function `name`.

    It sets `model.config._attn_implementation` (as `set_attn_implementation` does) and restores it after: another
    thread calling the same model meanwhile would see the switch, so decode with one model per thread."""
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = previous
