"""MemoEncoder (training/data/memo_encoder.py) gives raw sentencepiece's ids, exactly: on the shipped corpus, the
tokenizer's reference strings, adversarial strings, random strings over a nasty alphabet (seeded, and hypothesis),
with a warm cache, after a cache reset, and with BOS/EOS in the shard layout; models the memo cannot be proved exact
for fall back to plain sentencepiece."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

spm = pytest.importorskip("sentencepiece")

from training.data.memo_encoder import MemoEncoder  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "tests" / "fixtures" / "llama-tokenizer"
MODEL = TOKENIZER / "tokenizer.model"

ADVERSARIAL = [
    "", " ", "  ", "   ", "a", "a ", " a", "  a  ", "a  b", "a\u2581b", "\u2581", "\u2581\u2581", " \u2581 ", "\u2581a",
    "a\u2581", "\u2581 \u2581x", "\n", "\n\n", " \n ", "a\nb", "a \n b", "\t", "\tx\t", " \t ", "\r\n", "x\r\ny",
    "12345", "3.14159 and 2,718", "x1y2", " 0 ", "🦙", "🦙🦙 🦙", "a🦙b", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "中文 字符 测试", "日本語のテキスト",
    "naïve café résumé", "Ⅻ ﬁ ﬀ", "e\u0301", "\u200b", "\ufeffBOM", "\x00", "a\x00b", "\x1f\x1e", "<s>", "</s>",
    "<unk>", "<0x0A>", "▁▁▁▁", "word" * 300, "x" * 5000, " " * 100, "a " * 300, "if x:\n    return y\n",
    "def f():\n\tpass  \n", "https://example.com/a?b=c&d=e#f", "self.assertEqual(foo.bar(baz), [1, 2])",
    "Hello world", "The year 2023 had 365 days.", "  leading and trailing  ", "\u3000ideographic\u3000space",
    "\u00a0non-breaking\u00a0space", "ends with newline\n", "\n starts with newline",
]


def reference_strings() -> list[str]:
    data = json.loads((TOKENIZER / "reference_encodings.json").read_text(encoding="utf-8"))
    return [example["text"] for example in data["examples"]]


def corpus_documents() -> list[str]:
    texts = []
    for name in ("tinyshakespeare.txt", "alice_in_wonderland_pg11.txt"):
        texts += (ROOT / "training" / "corpus" / name).read_text(encoding="utf-8").split("\n\n")
    for path in sorted((ROOT / "tests" / "fixtures" / "data-pipeline").glob("*/*.jsonl")):
        texts += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line]
    return texts


@pytest.fixture(scope="module")
def sp():
    return spm.SentencePieceProcessor(model_file=str(MODEL))


@pytest.fixture(scope="module")
def encoder():
    encoder = MemoEncoder(MODEL)
    assert encoder.memoised, encoder.blocker  # Meta's tokenizer is the case the memo is for
    return encoder


def test_whole_shipped_corpus_and_reference_strings(sp, encoder):
    texts = corpus_documents() + reference_strings() + ADVERSARIAL
    expected = sp.encode(texts)
    assert encoder.encode(texts) == expected
    assert encoder.hits > encoder.misses  # a second pass, warm, must still agree
    assert encoder.encode(texts[::-1]) == expected[::-1]


def test_reference_encodings_file(encoder):
    data = json.loads((TOKENIZER / "reference_encodings.json").read_text(encoding="utf-8"))
    for example in data["examples"]:
        assert encoder.encode([example["text"]]) == [example["ids"]], example["text"]


def test_adversarial_strings_one_by_one(sp):
    encoder = MemoEncoder(MODEL)  # cold: each string's segments are new, or met in an earlier string
    for text in ADVERSARIAL:
        assert encoder.encode([text]) == [sp.encode(text)], repr(text)


NASTY = list(" \u2581\n\t\r ab AZé0123456789.,;:'\"()[]{}<>/\\_-=+*#@!?") + [
    "🦙", "中", "\u3000", "\u00a0", "\u200b", "\ufeff", "\x00", "\x1f", "\U0001d518", "ﬁ", "\u0301", "🇫🇷"]


def random_text(rng: random.Random) -> str:
    words = ["the", "The", "and", "self", "assert", "print", "http", "▁x", "  ", "\n    ", "café", "llama"]
    parts = [rng.choice(NASTY) if rng.random() < 0.7 else rng.choice(words) for _ in range(rng.randint(0, 40))]
    return "".join(parts)


def test_seeded_random_strings(sp):
    rng = random.Random(0)
    texts = [random_text(rng) for _ in range(3000)]
    encoder = MemoEncoder(MODEL, max_entries=500)  # small: the cache is reset many times on the way
    expected = sp.encode(texts)
    got = [ids for i in range(0, len(texts), 100) for ids in encoder.encode(texts[i:i + 100])]
    assert got == expected
    assert encoder.misses > 500  # the resets happened


def test_hypothesis_strings(sp, encoder):
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    text = st.lists(st.one_of(st.sampled_from(NASTY), st.characters(codec="utf-8")), max_size=60).map("".join)

    @hypothesis.settings(max_examples=200, deadline=None, derandomize=True)
    @hypothesis.given(st.lists(text, max_size=5))
    def check(texts):
        assert encoder.encode(texts) == sp.encode(texts)

    check()


def test_text_sentencepiece_refuses_leaves_the_encoder_consistent(sp):
    encoder = MemoEncoder(MODEL)
    with pytest.raises(Exception) as raw:
        sp.encode(["a lone \ud800 surrogate"])
    with pytest.raises(type(raw.value)):
        encoder.encode(["fresh words here", "a lone \ud800 surrogate"])
    texts = ["fresh words here", "a lone surrogate"]
    assert encoder.encode(texts) == sp.encode(texts)


def test_shard_layout_bos_eos(sp, encoder):
    texts = ["Hello world", "", "  two  spaces  ", "🦙\n"]
    ids, lengths = encoder.encode_documents(texts)
    expected = [[sp.bos_id(), *x, sp.eos_id()] for x in sp.encode(texts)]
    assert lengths.tolist() == [len(e) for e in expected]
    assert ids.tolist() == [i for e in expected for i in e]
    empty_ids, empty_lengths = encoder.encode_documents([])
    assert len(empty_ids) == 0 and len(empty_lengths) == 0


def test_model_the_memo_cannot_prove_falls_back_to_sentencepiece(tmp_path, sp):
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    proto.ParseFromString(MODEL.read_bytes())
    victim = next(p for p in proto.pieces if p.piece == "▁the")
    victim.piece = "e▁the"  # a piece spanning a word boundary: segments are no longer independent
    spanning = tmp_path / "spanning.model"
    spanning.write_bytes(proto.SerializeToString())
    encoder = MemoEncoder(spanning)
    assert not encoder.memoised and "spans a word boundary" in encoder.blocker
    other = spm.SentencePieceProcessor(model_file=str(spanning))
    texts = ["the the the", "one the two"]
    assert encoder.encode(texts) == other.encode(texts)
    ids, lengths = encoder.encode_documents(texts)
    assert ids.tolist() == [i for x in other.encode(texts) for i in (other.bos_id(), *x, other.eos_id())]
    assert lengths.tolist() == [len(x) + 2 for x in other.encode(texts)]

    proto.ParseFromString(MODEL.read_bytes())
    proto.normalizer_spec.remove_extra_whitespaces = True
    squeezing = tmp_path / "squeezing.model"
    squeezing.write_bytes(proto.SerializeToString())
    encoder = MemoEncoder(squeezing)
    assert not encoder.memoised
    texts = ["  a   b  "]
    squeezed = spm.SentencePieceProcessor(model_file=str(squeezing)).encode(texts)
    assert squeezed != sp.encode(texts)  # the spaces are squeezed: segment-wise encoding would be wrong here
    assert encoder.encode(texts) == squeezed
