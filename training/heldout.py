"""Held-out evaluation per source: loss, perplexity, bits per byte, and the unigram baseline it must beat."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import torch

_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def token_byte_lengths(tokenizer) -> torch.Tensor:
    """UTF-8 bytes of text each token id stands for (special tokens 0; SentencePiece byte pieces 1; '▁' = a space)."""
    vocab_size = len(tokenizer)
    special = set(tokenizer.all_special_ids)
    pieces = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    lengths = torch.zeros(vocab_size, dtype=torch.float64)
    for token_id, piece in enumerate(pieces):
        if token_id in special or piece is None:
            continue
        if _BYTE_PIECE.match(piece):
            lengths[token_id] = 1
        else:
            lengths[token_id] = len(piece.replace("\u2581", " ").encode("utf-8"))
    return lengths


@torch.no_grad()
def evaluate_batches(model, batches: Iterable[torch.Tensor], byte_lengths: torch.Tensor | None = None,
                     device: torch.device | str = "cpu", max_batches: int | None = None) -> dict:
    """Mean next-token loss (nats), perplexity and bits per byte of `model` over packed (B, T) batches."""
    was_training = model.training
    model.eval()
    total_nll, total_tokens, total_bytes = 0.0, 0, 0.0
    for index, batch in enumerate(batches):
        if max_batches is not None and index >= max_batches:
            break
        batch = batch.to(device)
        logits = model(input_ids=batch).logits.float()
        targets = batch[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), targets.reshape(-1),
                                                reduction="sum")
        total_nll += nll.item()
        total_tokens += targets.numel()
        if byte_lengths is not None:
            total_bytes += byte_lengths[targets.cpu()].sum().item()
    model.train(was_training)
    if total_tokens == 0:
        return {"loss": None, "perplexity": None, "bits_per_byte": None, "tokens": 0}
    loss = total_nll / total_tokens
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bits_per_byte": total_nll / math.log(2) / total_bytes if total_bytes else None,
        "tokens": total_tokens,
    }


def unigram_counts(token_lists: Iterable[list[int]], vocab_size: int) -> torch.Tensor:
    """How often each token id occurs in the training token lists."""
    counts = torch.zeros(vocab_size, dtype=torch.float64)
    for ids in token_lists:
        counts += torch.bincount(torch.as_tensor(ids, dtype=torch.long), minlength=vocab_size).double()
    return counts


def unigram_loss(counts: torch.Tensor, batches: Iterable[torch.Tensor], max_batches: int | None = None) -> float:
    """Cross-entropy (nats/token) of the add-one-smoothed unigram model `counts` on the batches' next tokens."""
    log_probs = torch.log((counts + 1.0) / (counts.sum() + counts.numel()))
    total, n = 0.0, 0
    for index, batch in enumerate(batches):
        if max_batches is not None and index >= max_batches:
            break
        targets = batch[:, 1:].reshape(-1)
        total -= log_probs[targets].sum().item()
        n += targets.numel()
    return total / n if n else float("nan")


__all__ = ["evaluate_batches", "token_byte_lengths", "unigram_counts", "unigram_loss"]
