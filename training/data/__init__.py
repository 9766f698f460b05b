"""Pre-training data (paper §2.1, Table 1): mixtures of cleaned sources, packed into fixed-length sequences.

    from training.data import PackedStream, load_mixture, demo_mixture_path
    mix = load_mixture(demo_mixture_path())
    stream = PackedStream(mix, tokenizer, seq_len=256)
    x = stream.next_batch(8)          # LongTensor (8, 256)
"""

from .cleaners import CLEANERS, apply_cleaners, get_cleaner, register_cleaner
from .encoding import BatchEncoder
from .mixture import MixtureConfig, demo_mixture_path, load_mixture, paper_mixture_path, resolve_mixture
from .packing import PackedStream
from .sources import SourceConfig

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
