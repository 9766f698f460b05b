"""train_tokenizer: the paper's SentencePiece BPE settings, exact fast conversion, reproducibility."""

from __future__ import annotations

import json
import random

import datasets
import pytest
import sentencepiece as spm
from transformers import AutoTokenizer

from modeling_llama import LlamaPaperTokenizer, LlamaPaperTokenizerFast
from modeling_llama.cli import main as cli_main
from modeling_llama.sentencepiece_bpe import BYTE, CONTROL, UNKNOWN, read_sentencepiece_model
from training.tokenizer import iter_texts, sample_sentences, train_tokenizer

WORDS = [
    "the",
    "model",
    "token",
    "language",
    "large",
    "training",
    "data",
    "of",
    "and",
    "in",
    "données",
    "naïve",
    "größer",
    "语言",
    "模型",
    "def",
    "return",
    "x",
    "=",
    "(",
    ")",
    ":",
    "llama",
    "🦙",
]


def make_corpus(lines: int = 1500, seed: int = 0) -> list[str]:
    """Documents of words, numbers and indentation, several lines each."""
    rng = random.Random(seed)
    docs = []
    for _ in range(lines // 5):
        body = []
        for _ in range(5):
            words = [
                rng.choice(WORDS) if rng.random() < 0.8 else str(rng.randint(0, 10**6))
                for _ in range(rng.randint(3, 15))
            ]
            body.append(rng.choice(["", "    ", "\t"]) + " ".join(words) + rng.choice(["", ".", "  "]))
        docs.append("\n".join(body))
    return docs


def random_texts(count: int, seed: int = 1) -> list[str]:
    """Arbitrary Unicode (any script, emoji, controls, whitespace runs), without U+2581, SentencePiece's space."""
    rng = random.Random(seed)
    ranges = [
        (0x20, 0x7E),
        (0x00, 0x1F),
        (0xA0, 0x24F),
        (0x400, 0x4FF),
        (0x4E00, 0x9FFF),
        (0x1F300, 0x1FAFF),
        (0x3000, 0x303F),
    ]
    out = ["", " ", "  x  ", "\t\n", "0123456789", "x" * 40]
    while len(out) < count:
        out.append(
            "".join(
                rng.choice([" ", "  ", "\n"]) if rng.random() < 0.2 else chr(rng.randint(*rng.choice(ranges)))
                for _ in range(rng.randint(1, 30))
            )
        )
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tokenizer(make_corpus(), 400, tmp_path_factory.mktemp("tok") / "out", seed=0, progress=False)


def test_paper_settings_are_in_the_model(trained):
    model = read_sentencepiece_model(trained / "tokenizer.model")
    assert (model.model_type, model.byte_fallback, model.add_dummy_prefix, model.remove_extra_whitespaces) == (
        2,
        True,
        True,
        False,
    )
    assert model.normalizer_name == "identity" and not model.precompiled_charsmap
    assert (model.unk_id, model.bos_id, model.eos_id, model.pad_id) == (0, 1, 2, -1)
    assert [p[:1] for p in model.pieces[:3]] == [("<unk>",), ("<s>",), ("</s>",)]
    assert model.pieces[1][2] == model.pieces[2][2] == CONTROL and model.pieces[0][2] == UNKNOWN
    assert [p for p, _, t in model.pieces[3:259]] == [f"<0x{b:02X}>" for b in range(256)]
    assert all(t == BYTE for _, _, t in model.pieces[3:259])
    assert len(model.pieces) == 400 and max(len(p) for p, _, t in model.pieces if t == 1) <= 16


def test_digits_are_split(trained):
    tokenizer = LlamaPaperTokenizerFast.from_pretrained(trained)
    pieces = [p for p in tokenizer.get_vocab() if any(c.isdigit() for c in p) and not p.startswith("<0x")]
    assert pieces and all(len(p.lstrip("\u2581")) == 1 for p in pieces)  # no multi-digit or digit+letter piece
    tokens = tokenizer.tokenize("year 2023 had 365 days")
    assert [t for t in tokens if t.strip("\u2581").isdigit()] == ["2", "0", "2", "3", "3", "6", "5"]


def test_byte_fallback_round_trips_any_unicode_and_conversion_is_exact(trained):
    sp = spm.SentencePieceProcessor(model_file=str(trained / "tokenizer.model"))
    fast = LlamaPaperTokenizerFast.from_pretrained(trained)
    slow = LlamaPaperTokenizer.from_pretrained(trained)
    for text in random_texts(150):
        ids = [1] + sp.encode(text)
        assert fast(text).input_ids == ids and slow(text).input_ids == ids, repr(text)
        assert 0 not in ids, repr(text)  # byte fallback: never <unk>
        assert fast.decode(ids, skip_special_tokens=True) == text, repr(text)
        assert slow.decode(ids, skip_special_tokens=True) == text, repr(text)


def test_reproducible_and_input_forms_agree(trained, tmp_path):
    corpus = make_corpus()
    (tmp_path / "a.txt").write_text("\n".join(corpus[:100]) + "\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in corpus[100:]), encoding="utf-8")
    forms = {
        "files": [str(tmp_path / "a.txt"), tmp_path / "b.jsonl"],
        "iterator": iter(corpus),
        "dataset": datasets.Dataset.from_dict({"text": corpus}),
        # streamed, with columns unknown until read (column_names is None)
        "streaming": datasets.IterableDataset.from_generator(lambda: ({"text": d} for d in corpus)),
    }
    expected = (trained / "tokenizer.model").read_bytes()
    for name, source in forms.items():
        out = train_tokenizer(source, 400, tmp_path / name, seed=0, progress=False)
        assert (out / "tokenizer.model").read_bytes() == expected, name
    other = train_tokenizer(corpus, 400, tmp_path / "capped", seed=0, max_sentences=200, progress=False)
    assert (other / "tokenizer.model").read_bytes() != expected  # the cap changes what is learned


def test_strings_are_file_names_only_in_a_list_of_existing_files(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("first line\nsecond line\n", encoding="utf-8")
    assert list(iter_texts([str(corpus)])) == ["first line\n", "second line\n"]
    assert list(iter_texts(corpus)) == ["first line\n", "second line\n"]
    assert list(iter_texts(iter([str(corpus)]))) == [str(corpus)]  # a generator yields texts, even this one
    assert list(iter_texts([str(corpus), "some text"])) == [str(corpus), "some text"]


def test_sample_cap_is_seeded_uniform_and_ordered():
    lines = [f"line {i}" for i in range(1000)]
    first = sample_sentences(iter(lines), 50, seed=3, progress=False)
    assert len(first) == 50 and first == sample_sentences(iter(lines), 50, seed=3, progress=False)
    assert first != sample_sentences(iter(lines), 50, seed=4, progress=False)
    assert first == sorted(first, key=lambda s: int(s.split()[1]))  # input order kept
    assert int(first[-1].split()[1]) > 500  # drawn from the whole stream, not its head
    assert sample_sentences(iter(lines[:10]), 50, seed=0, progress=False) == lines[:10]


def test_cli_and_auto_tokenizer(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(make_corpus(300)), encoding="utf-8")
    out = tmp_path / "tok"
    assert cli_main(["train-tokenizer", str(corpus), "--vocab-size", "350", "--output-dir", str(out), "--quiet"]) == 0
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(tokenizer) is LlamaPaperTokenizerFast and len(tokenizer) == 350
    assert tokenizer("the model").input_ids[0] == 1
    assert cli_main(["train-tokenizer", str(corpus), "--vocab-size", "350", "--output-dir", str(out), "--quiet"]) == 2


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="No text"):
        train_tokenizer(["", "\n\n"], 300, tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="too small"):
        train_tokenizer(make_corpus(50), 100, tmp_path / "b", progress=False)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        train_tokenizer([tmp_path / "missing.txt"], 300, tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="'content' column"):
        train_tokenizer(
            datasets.Dataset.from_dict({"text": ["a"]}), 300, tmp_path / "d", text_column="content", progress=False
        )
    streamed = datasets.IterableDataset.from_generator(lambda: iter([{"text": "a"}]))
    with pytest.raises(ValueError, match="'content' column"):
        train_tokenizer(streamed, 300, tmp_path / "e", text_column="content", progress=False)
