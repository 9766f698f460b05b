"""`llama-paper export --format gguf`, read back by independent readers: transformers' GGUF loader and GGUFReader."""

from __future__ import annotations

import shutil

import gguf
import pytest
import sentencepiece as spm
import torch
from transformers import AutoModelForCausalLM

from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM, LlamaPaperTokenizerFast
from modeling_llama.cli import main
from modeling_llama.conversion.gguf import export_gguf

from .conftest import CORPUS, IDS, TOKENIZER, save_model


def field(reader: gguf.GGUFReader, key: str):
    return reader.fields[key].contents()


def load_gguf(path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


def test_f32_file_gives_our_logits_and_llama_cpp_metadata(random_dir, tmp_path, capsys):
    path = tmp_path / "gguf" / "model-f32.gguf"
    argv = ["export", "--format", "gguf", "--model", str(random_dir), "--output", str(path), "--outtype", "f32"]
    assert main(argv) == 0
    ours = LlamaPaperForCausalLM.from_pretrained(random_dir, dtype=torch.float32).eval()
    theirs = load_gguf(path)
    assert type(theirs).__name__ == "LlamaForCausalLM"  # transformers un-permutes q/k: wrong rows would show here
    with torch.no_grad():
        assert (theirs(IDS).logits - ours(IDS).logits).abs().max().item() <= 1e-4
    reader = gguf.GGUFReader(path)
    config = ours.config
    expected = {
        "general.architecture": "llama", "general.file_type": int(gguf.LlamaFileType.ALL_F32),
        "llama.block_count": 2, "llama.embedding_length": 64, "llama.feed_forward_length": config.intermediate_size,
        "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2, "llama.rope.dimension_count": 16,
        "llama.context_length": 2048, "llama.vocab_size": 32000, "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": False,
    }
    assert {key: field(reader, key) for key in expected} == expected
    assert field(reader, "llama.rope.freq_base") == pytest.approx(5e5)
    names = {t.name: t.tensor_type.name for t in reader.tensors}
    assert names["token_embd.weight"] == names["output.weight"] == names["blk.1.attn_q.weight"] == "F32"
    assert len(names) == 2 + 1 + 2 * 9 and "blk.0.ffn_gate.weight" in names and "output_norm.weight" in names
    # the token list: every SentencePiece piece, score and type, in id order
    sp = spm.SentencePieceProcessor(model_file=str(TOKENIZER))
    pieces, scores, kinds = (field(reader, f"tokenizer.ggml.{k}") for k in ("tokens", "scores", "token_type"))
    assert pieces == [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    assert scores == pytest.approx([sp.get_score(i) for i in range(sp.get_piece_size())])
    T = gguf.TokenType
    assert kinds[:4] == [T.UNKNOWN, T.CONTROL, T.CONTROL, T.BYTE] and kinds[259] == T.NORMAL
    assert kinds == [T.BYTE if sp.is_byte(i) else T.UNKNOWN if sp.is_unknown(i) else T.CONTROL if sp.is_control(i)
                     else T.NORMAL for i in range(sp.get_piece_size())]


def greedy(model, prompt: torch.Tensor, steps: int = 16) -> list[int]:
    with torch.no_grad():
        return model.generate(prompt, max_new_tokens=steps, do_sample=False)[0, prompt.shape[1]:].tolist()


def test_q8_0_gives_the_same_greedy_tokens_on_a_trained_model(trained_dir, tmp_path):
    path = export_gguf(trained_dir, tmp_path / "model-q8_0.gguf", outtype="q8_0")
    reader = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["output_norm.weight"] == "F32"
    assert field(reader, "general.file_type") == int(gguf.LlamaFileType.MOSTLY_Q8_0)
    ours = LlamaPaperForCausalLM.from_pretrained(trained_dir, dtype=torch.float32).eval()
    theirs = load_gguf(path)
    with torch.no_grad():
        assert (theirs(IDS).logits - ours(IDS).logits).abs().max().item() > 0  # really quantized
    prompt = torch.tensor([LlamaPaperTokenizerFast.from_pretrained(trained_dir)(CORPUS.read_text()[:60]).input_ids])
    tokens = greedy(ours, prompt)
    assert len(set(tokens)) > 4 and tokens == greedy(theirs, prompt)


def test_outtypes_and_bad_input(random_dir, tmp_path, capsys):
    path = export_gguf(random_dir, tmp_path / "m.gguf", outtype="bf16")
    assert {t.tensor_type.name for t in gguf.GGUFReader(path).tensors} == {"BF16", "F32"}
    path = export_gguf(random_dir, tmp_path / "m.gguf", outtype="q4_0", overwrite=True)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert types["blk.0.ffn_down.weight"] == "Q4_0" and types["output.weight"] == "Q8_0"  # head kept above 4 bits
    # hidden size 48: rows of 48 do not fill blocks of 32
    torch.manual_seed(0)
    odd_config = LlamaPaperConfig(vocab_size=32000, hidden_size=48, num_attention_heads=4, num_hidden_layers=1,
                                  intermediate_size=96)
    odd = save_model(LlamaPaperForCausalLM(odd_config), tmp_path / "odd")
    capsys.readouterr()
    cases = [
        (["--model", str(odd), "--output", str(tmp_path / "o.gguf"), "--outtype", "q8_0"], "use --outtype f16"),
        (["--model", str(random_dir), "--output", str(path)], "--overwrite"),
        (["--model", str(tmp_path / "missing"), "--output", str(tmp_path / "x.gguf")], "not a folder"),
    ]
    for argv, needle in cases:
        assert main(["export", "--format", "gguf", *argv]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and needle in err[0], err
    assert not list(tmp_path.glob(".*tmp*")) and not (tmp_path / "o.gguf").exists()
    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(random_dir, no_tokenizer)
    (no_tokenizer / "tokenizer.model").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        export_gguf(no_tokenizer, tmp_path / "t.gguf")
    assert not (tmp_path / "t.gguf").exists()
