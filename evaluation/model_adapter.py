"""lm-eval's three request types for any Hugging Face causal LM: loglikelihood, loglikelihood_rolling, generate_until.

Tokenization is exactly lm-evaluation-harness 0.4.13's `HFLM` (`TemplateLM._encode_pair`, `HFLM.tok_encode`):
trailing whitespace of the context moves to the continuation; context and context+continuation are encoded with
the tokenizer's default special tokens (BOS in front for LLaMA, not added twice when the text already starts with
it) and the continuation is `whole[len(ctx):]`; an empty context becomes the prefix token (BOS, else EOS) with the
continuation encoded without special tokens; inputs longer than the model are truncated from the left.
Scoring lives in `prefix_scoring.PrefixScorer` (shared contexts computed once, float32 log-softmax).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from tqdm.auto import tqdm

from .generation import generate_batch
from .prefix_scoring import PrefixScorer

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

    @classmethod
    def from_pretrained(cls, path: str, *, dtype: str = "float32", device: str | None = None,
                        trust_remote_code: bool = True, **kwargs: Any) -> "CausalLMAdapter":
        """Load `path` (a folder or Hub id) with AutoModelForCausalLM/AutoTokenizer."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:  # registers our own model type with the Auto classes when this package is installed
            import modeling_llama  # noqa: F401
        except ImportError:
            pass
        if os.path.sep in path and not os.path.isdir(path):
            raise FileNotFoundError(f"Model folder {path} does not exist; pass a saved model folder or a Hub id.")
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        return cls(model.to(device), tokenizer, name=path, **kwargs)

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
    def _run_scoring(self, encoded: list[tuple[list[int], list[int]]], desc: str) -> list[tuple[float, bool]]:
        bar = tqdm(total=len(encoded), desc=desc, disable=not self.progress, leave=False)
        while True:
            try:
                out = self.scorer.score(encoded, progress=bar.update)
                break
            except torch.OutOfMemoryError:
                if not self.auto_batch or self.scorer.batch_size == 1:
                    raise
                self.scorer.batch_size //= 2  # --batch-size auto: halve and retry
                bar.reset()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        bar.close()
        return out

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        """`(log p(continuation | context), is_greedy)` for each `(context, continuation)`."""
        encoded = [self.encode_pair(c, k) for c, k in requests]
        return self._run_scoring(encoded, "loglikelihood")

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
        scores = self._run_scoring(windows, "loglikelihood_rolling")
        totals = [0.0] * len(texts)
        for i, (ll, _) in zip(owner, scores):
            totals[i] += ll
        return totals

    def generate_until(self, requests: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
        """Completions of each context, cut at the first stop string; `n` samples per request (default 1)."""
        out: list[list[str]] = [[] for _ in requests]
        order = sorted(range(len(requests)), key=lambda i: -len(self.tok_encode(requests[i][0])))
        bar = tqdm(total=len(requests), desc="generate_until", disable=not self.progress, leave=False)
        by_kwargs: dict[str, list[int]] = {}
        for i in order:
            by_kwargs.setdefault(repr(sorted(requests[i][1].items())), []).append(i)
        for idx in by_kwargs.values():
            kwargs = requests[idx[0]][1]
            n = int(kwargs.get("n", 1))
            step = max(1, self.batch_size // n)
            for start in range(0, len(idx), step):
                chunk = idx[start: start + step]
                texts = generate_batch(self, [requests[i][0] for i in chunk], kwargs)
                for i, t in zip(chunk, texts):
                    out[i] = t
                bar.update(len(chunk))
        bar.close()
        return out


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
