"""LlamaPaperTokenizer (slow) and LlamaPaperTokenizerFast against raw SentencePiece on the real LLaMA tokenizer."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm
from tokenizers import Tokenizer, pre_tokenizers
from transformers import AutoTokenizer

from modeling_llama import LlamaPaperTokenizer, LlamaPaperTokenizerFast
from modeling_llama.sentencepiece_bpe import build_backend, read_sentencepiece_model

SPECIAL_LITERALS = ("<s>", "</s>", "<unk>")

EDGE_CASES = [
    "",
    " ",
    "  ",
    "   ",
    "\n",
    "\t",
    "\r\n",
    "a",
    " a",
    "a ",
    "  a  b  ",
    "\t\tindented\n",
    "x\n\n\ny",
    "<s>",
    "</s>",
    "<unk>",
    "a<s>b",
    "Hello</s> world",
    "<0x0A>",
    "\u2581",
    "\u2581\u2581x",
    "a\u2581b",
    "\u2047",
    "\x00",
    "\x00\x01\x7f",
    "\ufeffBOM",
    "\u200b\u200d",
    "\u3000full width",
    "ｱ①ﬁ",
    "e\u0301",
    "🦙",
    "👩\u200d💻",
    "1234567890",
    "3.14159 -42 1e10",
    "中文字符测试",
    "日本語のテキスト",
    "한국어",
    "مرحبا",
    "שלום",
    "Ελληνικά",
]
CODE_WORDS = [
    "def",
    "return",
    "if",
    "else",
    "for",
    "in",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ":",
    ";",
    "=",
    "==",
    "+=",
    "->",
    "//",
    "#",
    "'",
    '"',
    "x",
    "self",
    "print",
    "None",
    "0",
    "42",
    "\\n",
    "`",
    "@",
    "&&",
    "||",
]
RANGES = [
    (0x20, 0x7E),
    (0x00, 0x1F),
    (0xA0, 0xFF),
    (0x100, 0x24F),
    (0x370, 0x3FF),
    (0x400, 0x4FF),
    (0x590, 0x6FF),
    (0x900, 0x97F),
    (0x2000, 0x206F),
    (0x2580, 0x259F),
    (0x3000, 0x30FF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7A3),
    (0xE000, 0xE0FF),
    (0x1F300, 0x1FAFF),
    (0x10000, 0x1007F),
    (0x300, 0x36F),
]


def random_strings(count: int, seed: int = 0) -> list[str]:
    """Edge cases plus `count` random strings: Unicode from many scripts, code, numbers and whitespace runs."""
    rng = random.Random(seed)
    out = list(EDGE_CASES)

    def unicode_text(n: int) -> str:
        return "".join(chr(rng.randint(*rng.choice(RANGES))) for _ in range(n))

    def code_text(n: int) -> str:
        lines = []
        for _ in range(n):
            indent = rng.choice(["", "    ", "\t", "        ", "  "])
            lines.append(indent + rng.choice(["", " "]).join(rng.choice(CODE_WORDS) for _ in range(rng.randint(1, 8))))
        return "\n".join(lines)

    def number_text(n: int) -> str:
        return " ".join(
            rng.choice([str(rng.randint(-(10**9), 10**9)), f"{rng.random() * 1e4:.3f}", "0" * rng.randint(1, 6)])
            for _ in range(n)
        )

    def whitespace_text(n: int) -> str:
        return "".join(rng.choice([" ", " ", "  ", "\t", "\n", "\r", "\u00a0", "word", "x", "."]) for _ in range(n))

    makers = [unicode_text, code_text, number_text, whitespace_text]
    while len(out) < count + len(EDGE_CASES):
        parts = [rng.choice(makers)(rng.randint(1, 12)) for _ in range(rng.randint(1, 3))]
        out.append(rng.choice(["", " ", "\n"]).join(parts))
    return out


STRINGS = random_strings(300)


@pytest.fixture(scope="module")
def model_file(fixtures) -> Path:
    return fixtures / "llama-tokenizer" / "tokenizer.model"


@pytest.fixture(scope="module")
def sp(model_file) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(model_file))


@pytest.fixture(scope="module")
def slow(model_file) -> LlamaPaperTokenizer:
    return LlamaPaperTokenizer(vocab_file=str(model_file))


@pytest.fixture(scope="module")
def fast(model_file) -> LlamaPaperTokenizerFast:
    return LlamaPaperTokenizerFast(vocab_file=str(model_file))


@pytest.fixture(scope="module")
def saved_fast(fast, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("saved_fast")
    fast.save_pretrained(folder)
    return folder


def test_generator_covers_the_hard_cases():
    joined = "".join(STRINGS)
    assert "" in STRINGS and len(STRINGS) >= 300
    for needle in ["  ", "\t", "\n", "\x00", "🦙", "中", "<s>", "0"]:
        assert needle in joined


def test_reference_encodings(fixtures, slow, fast, sp):
    examples = json.loads((fixtures / "llama-tokenizer" / "reference_encodings.json").read_text())["examples"]
    assert len(examples) >= 5
    for example in examples:
        text = example["text"]
        assert sp.encode(text) == example["ids"]
        for tokenizer in (slow, fast):
            assert tokenizer(text).input_ids == [1] + example["ids"], (type(tokenizer).__name__, text)
            assert tokenizer.tokenize(text) == example["pieces"]
            assert tokenizer.convert_ids_to_tokens(example["ids"]) == example["pieces"]
            assert tokenizer(text, add_special_tokens=False).input_ids == example["ids"]


def test_slow_and_fast_equal_sentencepiece_on_random_strings(slow, fast, sp):
    for text in STRINGS:
        expected = [1] + sp.encode(text)
        assert slow(text).input_ids == expected, repr(text)
        assert fast(text).input_ids == expected, repr(text)
        decoded = sp.decode(expected[1:])
        assert slow.decode(expected, skip_special_tokens=True) == decoded, repr(text)
        assert fast.decode(expected, skip_special_tokens=True) == decoded, repr(text)


def test_batch_encode_and_decode_equal_single(slow, fast, sp):
    batch = STRINGS[:64]
    expected = [[1] + sp.encode(text) for text in batch]
    assert fast(batch).input_ids == expected
    assert slow(batch).input_ids == expected
    assert fast.batch_decode(expected, skip_special_tokens=True) == [sp.decode(ids[1:]) for ids in expected]
    assert slow.batch_decode(expected, skip_special_tokens=True) == [sp.decode(ids[1:]) for ids in expected]


def test_kept_special_tokens_decode_the_same(slow, fast, sp):
    ids = [1] + sp.encode(" Hello  world") + [2] + sp.encode("again") + [1]
    assert slow.decode(ids) == fast.decode(ids) == "<s>  Hello  world</s> again<s>"


def test_tokenizer_json_alone_is_exact(saved_fast, sp):
    backend = Tokenizer.from_file(str(saved_fast / "tokenizer.json"))
    # A tokenizers-only runtime matches special-token strings in text (it cannot store split_special_tokens),
    # so strings that contain one are compared in the split_special_tokens=False test instead.
    for text in STRINGS:
        if not any(s in text for s in SPECIAL_LITERALS):
            ids = [1] + sp.encode(text)
            assert backend.encode(text).ids == ids, repr(text)
            assert backend.decode(ids, skip_special_tokens=True) == sp.decode(ids[1:]), repr(text)


def test_inexact_tokenizer_json_is_rebuilt_from_the_model(saved_fast, tmp_path, sp):
    """A tokenizer.json in transformers' LlamaTokenizer style (Metaspace) is replaced by the exact pipeline."""
    folder = tmp_path / "inexact"
    shutil.copytree(saved_fast, folder)
    backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
    backend.normalizer = None
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    backend.save(str(folder / "tokenizer.json"))
    text = " leading space"
    assert backend.encode(text).ids != [1] + sp.encode(text)  # the mismatch transformers 5 has
    assert LlamaPaperTokenizerFast.from_pretrained(folder)(text).input_ids == [1] + sp.encode(text)


def test_special_token_strings_split_mode(model_file, sp):
    """split_special_tokens=False: `<s>`/`</s>` in text become ids; each chunk is encoded by SentencePiece alone."""
    text = "a</s>b <s> c</s>"
    expected = [1] + sp.encode("a") + [2] + sp.encode("b ") + [1] + sp.encode(" c") + [2]
    slow = LlamaPaperTokenizer(vocab_file=str(model_file), split_special_tokens=False)
    fast = LlamaPaperTokenizerFast(vocab_file=str(model_file), split_special_tokens=False)
    assert slow(text).input_ids == fast(text).input_ids == expected
    assert fast.decode(expected, skip_special_tokens=True) == slow.decode(expected, skip_special_tokens=True)


def test_sentencepiece_model_read_without_protobuf(model_file):
    model = read_sentencepiece_model(model_file)
    assert len(model.pieces) == 32000
    assert (model.model_type, model.byte_fallback, model.add_dummy_prefix, model.remove_extra_whitespaces) == (
        2,
        True,
        True,
        False,
    )
    assert (model.unk_id, model.bos_id, model.eos_id, model.pad_id) == (0, 1, 2, -1)
    assert model.pieces[3][0] == "<0x00>" and model.pieces[259][0] == "\u2581\u2581"


def test_fast_tokenizer_is_built_without_protobuf(model_file, sp, monkeypatch):
    """protobuf is installed here, so hide it: building from tokenizer.model must not need it."""
    for name in [m for m in sys.modules if m == "google.protobuf" or m.startswith("google.protobuf.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "google.protobuf", None)
    fast = LlamaPaperTokenizerFast(vocab_file=str(model_file))
    for text in STRINGS[:100]:
        assert fast(text).input_ids == [1] + sp.encode(text), repr(text)


@pytest.mark.parametrize("cls", [LlamaPaperTokenizer, LlamaPaperTokenizerFast])
@pytest.mark.parametrize("add_bos,add_eos", [(False, True), (True, False), (False, False)])
def test_bos_eos_options_survive_save_and_load(cls, add_bos, add_eos, model_file, sp, tmp_path):
    tokenizer = cls(vocab_file=str(model_file), add_bos_token=add_bos, add_eos_token=add_eos)
    expected = [1] * add_bos + sp.encode("x y") + [2] * add_eos
    assert tokenizer("x y").input_ids == expected
    tokenizer.save_pretrained(tmp_path)
    assert {"tokenizer.model", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(tmp_path))
    for loader in (LlamaPaperTokenizer, LlamaPaperTokenizerFast, AutoTokenizer):
        loaded = loader.from_pretrained(tmp_path)
        assert (loaded.add_bos_token, loaded.add_eos_token) == (add_bos, add_eos)
        assert loaded("x y").input_ids == expected
    assert Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode("x y").ids == expected


@pytest.mark.parametrize("cls", [LlamaPaperTokenizer, LlamaPaperTokenizerFast])
def test_auto_tokenizer_returns_fast_class(cls, model_file, tmp_path):
    cls(vocab_file=str(model_file)).save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is LlamaPaperTokenizerFast
    assert loaded.padding_side == "left" and loaded.pad_token is None


def test_padding_is_left_and_needs_a_pad_token(fast, slow, sp):
    with pytest.raises(ValueError, match="pad"):
        fast(["a", "a b c"], padding=True)
    for tokenizer in (fast, slow):
        tokenizer.pad_token = tokenizer.unk_token
        try:
            batch = tokenizer(["a", "a b c"], padding=True)
        finally:
            tokenizer.pad_token = None
        width = len(sp.encode("a b c")) + 1
        short = [1] + sp.encode("a")
        assert batch.input_ids[0] == [0] * (width - len(short)) + short
        assert batch.attention_mask[0] == [0] * (width - len(short)) + [1] * len(short)


def test_offsets_mapping_points_into_text(fast):
    text = "Hello  wörld\n12 🦙"
    encoding = fast(text, return_offsets_mapping=True)
    pieces = fast.convert_ids_to_tokens(encoding.input_ids)
    assert encoding.offset_mapping[0] == (0, 0)  # BOS covers no text
    spans = encoding.offset_mapping[1:]
    for index, (piece, (start, end)) in enumerate(zip(pieces[1:], spans, strict=True)):
        if piece.startswith("<0x"):  # byte-fallback pieces all point at the character they spell
            assert len(text[start:end]) == 1 and ord(text[start:end]) > 0x7F or text[start:end] == "\n"
        else:  # the first piece's "▁" is the dummy prefix, which covers no character
            surface = piece.replace("\u2581", " ")
            assert text[start:end] == (surface[1:] if index == 0 else surface)
    covered = "".join(text[a:b] for i, (a, b) in enumerate(spans) if i == 0 or spans[i - 1] != (a, b))
    assert covered == text


def test_remote_code_without_the_package(saved_fast, tmp_path, sp):
    folder = tmp_path / "tok"
    shutil.copytree(saved_fast, folder)
    script = (
        "import sys, json; sys.modules['modeling_llama'] = None\n"  # the package is installed editable: hide it
        "from transformers import AutoTokenizer\n"
        f"t = AutoTokenizer.from_pretrained({str(folder)!r}, trust_remote_code=True)\n"
        "print(json.dumps([type(t).__module__, type(t).__name__, t('Hi  there 42').input_ids]))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env["PYTHONPATH"] = ""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    module, name, ids = json.loads(result.stdout.strip().splitlines()[-1])
    assert module.startswith("transformers_modules.") and name == "LlamaPaperTokenizerFast"
    assert ids == [1] + sp.encode("Hi  there 42")


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        LlamaPaperTokenizer(vocab_file=str(tmp_path / "missing.model"))
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        LlamaPaperTokenizerFast(vocab_file=str(tmp_path / "missing.model"))
    junk = tmp_path / "tokenizer.model"
    junk.write_bytes(b"this is not a sentencepiece model at all")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        LlamaPaperTokenizer(vocab_file=str(junk))
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        build_backend(junk)


def test_inexact_sentencepiece_models_are_refused(tmp_path):
    lines = [f"the quick brown fox {i} jumps over the lazy dog number {i * 7}" for i in range(200)]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(tmp_path / "uni"),
        vocab_size=60,
        model_type="unigram",
        minloglevel=2,
    )
    with pytest.raises(ValueError, match="not BPE"):
        build_backend(tmp_path / "uni.model")
