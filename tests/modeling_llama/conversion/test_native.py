"""`llama-paper export --format llama` and `import-hf`: transformers-native Llama folders, both ways."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from modeling_llama import LlamaPaperForCausalLM
from modeling_llama.cli import main
from modeling_llama.conversion.native import export_llama, import_llama

from ..test_tokenizer import EDGE_CASES, STRINGS
from .conftest import IDS, TOKENIZER, run_without_package


@pytest.fixture(scope="module")
def sp() -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(TOKENIZER))


@pytest.fixture(scope="module")
def native_dir(random_dir, tmp_path_factory) -> Path:
    return export_llama(random_dir, tmp_path_factory.mktemp("native") / "llama")


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update(load_file(file))
    return out


def test_native_export_loads_without_our_package_or_remote_code(random_dir, native_dir, sp, tmp_path):
    assert not list(native_dir.glob("*.py"))  # nothing to run: plain transformers classes
    config = json.loads((native_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert config["rope_parameters"] == {"rope_type": "default", "rope_theta": 5e5} and "auto_map" not in config
    strings = EDGE_CASES + STRINGS
    (tmp_path / "strings.json").write_text(json.dumps(strings))
    (tmp_path / "ids.json").write_text(json.dumps([sp.encode(s) for s in strings]))
    script = f"""
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained({str(native_dir)!r}, dtype=torch.float32, trust_remote_code=False)
tok = AutoTokenizer.from_pretrained({str(native_dir)!r}, trust_remote_code=False)
save_file({{"logits": model(torch.tensor({IDS.tolist()})).logits.contiguous()}}, "logits.safetensors")
strings, ids = json.load(open("strings.json")), json.load(open("ids.json"))
print(json.dumps({{"model": type(model).__module__ + "." + type(model).__name__, "tok": type(tok).__module__,
                  "encoded": [tok(s).input_ids for s in strings], "decoded": [tok.decode(i) for i in ids]}}))
"""
    out = run_without_package(script, tmp_path)
    assert out["model"] == "transformers.models.llama.modeling_llama.LlamaForCausalLM"
    assert out["tok"].startswith("transformers.")
    ours = LlamaPaperForCausalLM.from_pretrained(random_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = ours(IDS).logits
    theirs = load_file(tmp_path / "logits.safetensors")["logits"]
    assert (theirs - expected).abs().max().item() <= 1e-5
    for text, encoded, decoded in zip(strings, out["encoded"], out["decoded"], strict=True):
        assert encoded == [1] + sp.encode(text), text
        assert decoded == sp.decode(sp.encode(text)), text


def transformers_llama_folder(folder: Path, *, kv_heads: int, tied: bool) -> LlamaForCausalLM:
    """A LlamaForCausalLM made and saved by transformers itself, with Meta's tokenizer.model beside it."""
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=32000, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=kv_heads, tie_word_embeddings=tied,
                         rope_parameters={"rope_type": "default", "rope_theta": 500000.0}, max_position_embeddings=256)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    model.save_pretrained(folder)
    shutil.copyfile(TOKENIZER, folder / "tokenizer.model")
    return model


@pytest.mark.parametrize("kv_heads,tied", [(2, False), (1, True)])
def test_transformers_llama_folder_imports_with_equal_logits(kv_heads, tied, random_dir, tmp_path, sp):
    reference = transformers_llama_folder(tmp_path / "hf", kv_heads=kv_heads, tied=tied)
    with torch.no_grad():
        expected = reference(IDS).logits
        direct = LlamaPaperForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
        assert direct.config.rope_theta == 500000.0 and direct.config.model_type == "llama_paper"
        assert (direct(IDS).logits - expected).abs().max().item() <= 1e-5
        assert main(["import-hf", "--input-dir", str(tmp_path / "hf"), "--output-dir", str(tmp_path / "ours")]) == 0
        imported = AutoModelForCausalLM.from_pretrained(tmp_path / "ours", dtype=torch.float32).eval()
        assert isinstance(imported, LlamaPaperForCausalLM)
        assert (imported(IDS).logits - expected).abs().max().item() <= 1e-5
    # remote code travels with the folder: the model's own sources, as save_pretrained copies them, nothing else
    sources = {p.name for p in (tmp_path / "ours").glob("*.py")}
    assert "modeling_llama_paper.py" in sources and sources == {p.name for p in random_dir.glob("*.py")}
    assert not any("conver" in name or "stream" in name or "gguf" in name for name in sources)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "ours")
    assert tokenizer("Hello  world").input_ids == [1] + sp.encode("Hello  world")


def test_export_then_import_reproduces_every_tensor(random_dir, native_dir, tmp_path):
    back = import_llama(native_dir, tmp_path / "back")
    original, returned = tensors(random_dir), tensors(back)
    assert original.keys() == returned.keys() == tensors(native_dir).keys()
    for name, tensor in original.items():
        assert returned[name].dtype == tensor.dtype and torch.equal(returned[name], tensor), name
    assert json.loads((back / "config.json").read_text())["rope_theta"] == 5e5


def test_bf16_and_sharded_folders_export_bit_for_bit(tmp_path):
    torch.manual_seed(2)
    from modeling_llama import LlamaPaperConfig

    model = LlamaPaperForCausalLM(LlamaPaperConfig.from_preset("tiny")).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "ours", max_shard_size="1MB")
    assert (tmp_path / "ours" / "model.safetensors.index.json").is_file()
    shutil.copyfile(TOKENIZER, tmp_path / "ours" / "tokenizer.model")
    native = export_llama(tmp_path / "ours", tmp_path / "native")
    assert json.loads((native / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(native / "model.safetensors", framework="pt") as handle:
        assert all(handle.get_slice(k).get_dtype() == "BF16" for k in handle.keys())
    original, exported = tensors(tmp_path / "ours"), tensors(native)
    assert original.keys() == exported.keys()
    assert all(torch.equal(original[k], exported[k]) for k in original)


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}, "RoPE scaling"),
        ({"rope_parameters": {"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}}, "RoPE scaling"),
        ({"attention_bias": True}, "attention_bias"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"head_dim": 32}, "head_dim"),
        ({"hidden_act": "gelu"}, "hidden_act"),
    ],
)
def test_features_llama_lacks_are_refused(change, needle, tmp_path, capsys):
    config = LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4)
    (tmp_path / "hf").mkdir()  # the refusal comes from config.json, before any weight is read
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config.to_dict(), **change}))
    with pytest.raises(ValueError, match=needle) as error:
        LlamaPaperForCausalLM.from_pretrained(tmp_path / "hf")
    assert "LlamaForCausalLM" in str(error.value)  # the message names the fix
    assert main(["import-hf", "--input-dir", str(tmp_path / "hf"), "--output-dir", str(tmp_path / "out")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and needle in err[0] and "AutoModelForCausalLM" in err[0], err
    assert not (tmp_path / "out").exists()


def test_bad_input_is_one_line(random_dir, native_dir, tmp_path, capsys):
    cases = [
        (["export", "--format", "llama", "--model", str(tmp_path / "missing"), "--output", str(tmp_path / "o")],
         "is not a folder"),
        (["export", "--format", "llama", "--model", str(random_dir), "--output", str(native_dir)], "--overwrite"),
        (["export", "--format", "llama", "--model", str(random_dir), "--output", str(tmp_path / "o"),
          "--outtype", "q8_0"], "--format gguf only"),
        (["import-hf", "--input-dir", str(random_dir), "--output-dir", str(tmp_path / "i"),
          "--tokenizer", str(tmp_path / "none.model")], "--tokenizer"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    (tmp_path / "noweights").mkdir()
    shutil.copyfile(random_dir / "config.json", tmp_path / "noweights" / "config.json")
    with pytest.raises(FileNotFoundError, match="safetensors"):
        export_llama(tmp_path / "noweights", tmp_path / "o")
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.tmp*"))
    assert export_llama(random_dir, native_dir, overwrite=True) == native_dir
