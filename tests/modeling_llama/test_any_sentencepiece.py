"""convert-meta with SentencePiece models that are not Meta's kind: the tokenizers equal raw SentencePiece.

Small BPE/Unigram models are trained here with sentencepiece's own trainer on the shipped corpus, in the settings
other LLaMA-architecture checkpoints use (llama2.c's custom tokenizers: remove_extra_whitespaces on; no byte
fallback; no dummy prefix; SentencePiece's default nmt_nfkc normalizer).
"""

from __future__ import annotations

import io
import json
import random
import warnings
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from transformers import AutoTokenizer

from modeling_llama import LlamaPaperForCausalLM, LlamaPaperTokenizer, LlamaPaperTokenizerFast
from modeling_llama.conversion.convert_meta import convert_meta_checkpoint

from .test_tokenizer import random_strings

CORPUS = Path(__file__).parents[2] / "training" / "corpus" / "alice_in_wonderland_pg11.txt"
# name -> trainer options; every model is BPE unless it says otherwise.
SETTINGS = {
    "collapse-no-bytes": dict(normalization_rule_name="identity", remove_extra_whitespaces=True, byte_fallback=False),
    "no-prefix-no-bytes": dict(
        normalization_rule_name="identity", remove_extra_whitespaces=False, byte_fallback=False, add_dummy_prefix=False
    ),
    "nfkc-default": dict(),  # SentencePiece's defaults: nmt_nfkc charsmap, whitespace collapsed, no byte fallback
    "llama2c": dict(  # llama2.c's train_vocab options (tinystories.py)
        normalization_rule_name="identity", byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True
    ),
    "collapse-no-prefix-bytes": dict(
        normalization_rule_name="identity", remove_extra_whitespaces=True, add_dummy_prefix=False, byte_fallback=True
    ),
}
EXTRA_STRINGS = [
    "  two  spaces  ",
    "tabs\tand\nnewlines\n\n",
    " \t \n ",
    "unknown: Żółć ẞ ∑ 🦙🦙 x",
    "Q",
    "QQ rare",
    "digits 0123456789 9876543210",
    "Alice was beginning to get very tired",
    "\u2581 literal\u2581\u2581marks",
    "\u3000ideographic\u00a0nbsp",
    "ﬁ ligature ①",
]


def train(options: dict, model_type: str = "bpe", vocab_size: int = 320) -> bytes:
    """A small SentencePiece model trained on the first lines of Alice in Wonderland."""
    lines = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()][:2500]
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=out,
        model_type=model_type,
        vocab_size=vocab_size,
        character_coverage=0.995,  # rare characters stay unknown
        minloglevel=2,
        num_threads=1,
        **options,
    )
    return out.getvalue()


def make_checkpoint(folder: Path, model_proto: bytes, dim: int = 32) -> dict[str, torch.Tensor]:
    """A one-shard, one-layer checkpoint in Meta's layout whose vocabulary is the given SentencePiece model's."""
    vocab = spm.SentencePieceProcessor(model_proto=model_proto).get_piece_size()
    gen = torch.Generator().manual_seed(0)
    hidden = 32 * -(-int(2 * 4 * dim / 3) // 32)
    shapes = {
        "tok_embeddings.weight": (vocab, dim),
        "norm.weight": (dim,),
        "output.weight": (vocab, dim),
        "layers.0.attention_norm.weight": (dim,),
        "layers.0.ffn_norm.weight": (dim,),
        **{f"layers.0.attention.{w}.weight": (dim, dim) for w in ("wq", "wk", "wv", "wo")},
        "layers.0.feed_forward.w1.weight": (hidden, dim),
        "layers.0.feed_forward.w3.weight": (hidden, dim),
        "layers.0.feed_forward.w2.weight": (dim, hidden),
    }
    weights = {key: torch.randn(*shape, generator=gen) for key, shape in shapes.items()}
    folder.mkdir(parents=True)
    torch.save(weights, folder / "consolidated.00.pth")
    params = {"dim": dim, "multiple_of": 32, "n_heads": 4, "n_layers": 1, "norm_eps": 1e-6, "vocab_size": -1}
    (folder / "params.json").write_text(json.dumps(params))
    (folder / "tokenizer.model").write_bytes(model_proto)
    return weights


@pytest.fixture(scope="session")
def strings() -> list[str]:
    return random_strings(250, seed=7) + EXTRA_STRINGS


@pytest.fixture(scope="session")
def converted(tmp_path_factory) -> dict[str, tuple[Path, spm.SentencePieceProcessor, dict, list]]:
    """Every setting (plus a Unigram model) trained, put in a checkpoint and converted once per session."""
    out = {}
    for name, options in {**SETTINGS, "unigram": dict(byte_fallback=True)}.items():
        proto = train(options, model_type="unigram" if name == "unigram" else "bpe")
        root = tmp_path_factory.mktemp(name)
        weights = make_checkpoint(root / "meta", proto)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            convert_meta_checkpoint(root / "meta", root / "hf", progress=False)
        ours = [w for w in caught if "no exact fast tokenizer" in str(w.message)]
        out[name] = (root / "hf", spm.SentencePieceProcessor(model_proto=proto), weights, ours)
    return out


def assert_equals_sentencepiece(tokenizer, sp: spm.SentencePieceProcessor, strings: list[str]) -> None:
    for text in strings:
        expected = [sp.bos_id()] + sp.encode(text)
        assert tokenizer(text)["input_ids"] == expected, repr(text)
        assert tokenizer.decode(expected, skip_special_tokens=True) == sp.decode(expected[1:]), repr(text)
        assert tokenizer.decode(expected[1:]) == sp.decode(expected[1:]), repr(text)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_fast_and_slow_tokenizers_equal_sentencepiece(name, converted, strings):
    folder, sp, weights, warned = converted[name]
    assert not warned
    reached = {i for s in strings for i in sp.encode(s)}  # the strings reach <unk> (or byte pieces)
    assert any(sp.is_byte(i) for i in reached) if sp.piece_to_id("<0x41>") else sp.unk_id() in reached
    auto = AutoTokenizer.from_pretrained(folder)
    assert isinstance(auto, LlamaPaperTokenizerFast)
    assert_equals_sentencepiece(auto, sp, strings)
    assert_equals_sentencepiece(LlamaPaperTokenizer.from_pretrained(folder), sp, strings)
    # Decoding is exact on any id sequence, not only on what encode produces (e.g. a model's samples).
    rng = random.Random(0)
    # (Byte-fallback models never encode to <unk>; a leading one is the documented exception there.)
    excluded = (lambda i: sp.is_byte(i) or sp.is_unknown(i)) if sp.piece_to_id("<0x41>") else sp.is_byte
    ordinary = [i for i in range(sp.get_piece_size()) if not (sp.is_control(i) or excluded(i))]
    for _ in range(200):
        ids = [rng.choice(ordinary) for _ in range(rng.randint(1, 8))]
        assert auto.decode(ids, skip_special_tokens=True) == sp.decode(ids), ids
    # The weights came through too.
    model = LlamaPaperForCausalLM.from_pretrained(folder)
    assert torch.equal(model.model.embed_tokens.weight, weights["tok_embeddings.weight"])


def test_no_exact_fast_pipeline_converts_with_the_slow_tokenizer_and_one_warning(converted, strings):
    folder, sp, weights, warned = converted["unigram"]
    assert len(warned) == 1 and "not BPE" in str(warned[0].message)
    assert not (folder / "tokenizer.json").exists()
    auto = AutoTokenizer.from_pretrained(folder)
    assert isinstance(auto, LlamaPaperTokenizer)
    assert_equals_sentencepiece(auto, sp, strings)
    with pytest.raises(ValueError, match="slow `LlamaPaperTokenizer`"):
        LlamaPaperTokenizerFast(vocab_file=str(folder / "tokenizer.model"))
    model = LlamaPaperForCausalLM.from_pretrained(folder)
    assert torch.equal(model.lm_head.weight, weights["output.weight"])
