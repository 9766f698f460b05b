"""Pre-training data (paper §2.1, Table 1): mixtures of cleaned sources, packed into fixed-length sequences.

    from training.data import PackedStream, load_mixture, demo_mixture_path
    mix = load_mixture(demo_mixture_path())
    stream = PackedStream(mix, tokenizer, seq_len=256)
    x = stream.next_batch(8)          # LongTensor (8, 256)
"""

from importlib import import_module

# Exports load on first use (PEP 562): `training.data.pipeline`'s worker processes (datatrove tasks) import this
# package, and must not pay for torch (~5 s on a busy 2-core machine) when they only tokenize or filter.
_EXPORTS = {
    "CLEANERS": "cleaners", "apply_cleaners": "cleaners", "get_cleaner": "cleaners", "register_cleaner": "cleaners",
    "BatchEncoder": "encoding", "MixtureConfig": "mixture", "demo_mixture_path": "mixture",
    "load_mixture": "mixture", "paper_mixture_path": "mixture", "resolve_mixture": "mixture",
    "PackedStream": "packing", "SourceConfig": "sources",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "CLEANERS",
    "BatchEncoder",
    "MixtureConfig",
    "PackedStream",
    "SourceConfig",
    "apply_cleaners",
    "demo_mixture_path",
    "get_cleaner",
    "load_mixture",
    "paper_mixture_path",
    "register_cleaner",
    "resolve_mixture",
]
