"""Saved folders load through the Auto classes, sharded, and through remote code where our package is absent."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM, LlamaPaperModel

from .test_modeling import VOCAB, left_padded_batch, tiny


def test_save_then_auto_from_pretrained_gives_identical_logits(tmp_path):
    ours = tiny(num_key_value_heads=2)
    ours.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "llama_paper" and config["architectures"] == ["LlamaPaperForCausalLM"]
    assert isinstance(AutoConfig.from_pretrained(tmp_path), LlamaPaperConfig)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is LlamaPaperForCausalLM
    # Non-persistent rotary buffers are recomputed, not left as meta-device garbage.
    assert torch.equal(loaded.model.rotary_emb.inv_freq, ours.model.rotary_emb.inv_freq)
    ids, mask = left_padded_batch()
    with torch.no_grad():
        assert torch.equal(loaded(ids, attention_mask=mask).logits, ours(ids, attention_mask=mask).logits)
    base = AutoModel.from_pretrained(tmp_path)
    assert type(base) is LlamaPaperModel


def test_sharded_safetensors_above_max_shard_size(tmp_path):
    ours = tiny()
    ours.save_pretrained(tmp_path, max_shard_size="200KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 1 and not list(tmp_path.glob("*.bin"))
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    stored = {}
    for shard in shards:
        stored.update(load_file(shard))
    assert set(index["weight_map"]) == set(stored) == set(ours.state_dict())
    for name, tensor in ours.state_dict().items():
        assert torch.equal(stored[name], tensor), name


def test_saved_folder_carries_auto_map_and_sources(tmp_path):
    tiny().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoConfig"] == "configuration_llama_paper.LlamaPaperConfig"
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_llama_paper.LlamaPaperForCausalLM"
    for source in ("configuration_llama_paper.py", "modeling_llama_paper.py", "rotary.py"):
        assert (tmp_path / source).is_file(), source


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys, json
    sys.modules["modeling_llama"] = None  # our package is "not installed" in this interpreter
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = sys.argv[1]
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    ids = torch.load(folder + "/../ids.pt", weights_only=True)
    mask = torch.load(folder + "/../mask.pt", weights_only=True)
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
    torch.save(logits, folder + "/../remote_logits.pt")
    print(json.dumps({"model": type(model).__module__, "tokenizer": type(tok).__name__,
                      "ids": tok("Hello world 2023")["input_ids"]}))
    """
)


def test_remote_code_load_in_a_python_without_our_package(tmp_path, fixtures):
    from modeling_llama import LlamaPaperTokenizerFast

    folder = tmp_path / "model"
    ours = tiny(num_key_value_heads=2)
    ours.save_pretrained(folder)
    tokenizer = LlamaPaperTokenizerFast(vocab_file=str(fixtures / "llama-tokenizer" / "tokenizer.model"))
    tokenizer.save_pretrained(folder)
    ids, mask = left_padded_batch()
    torch.save(ids, tmp_path / "ids.pt")
    torch.save(mask, tmp_path / "mask.pt")
    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(folder)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["model"].startswith("transformers_modules."), report
    assert report["ids"] == [1, 15043, 3186, 29871, 29906, 29900, 29906, 29941]  # BOS + sentencepiece's ids
    remote = torch.load(tmp_path / "remote_logits.pt", weights_only=True)
    with torch.no_grad():
        local = ours(ids, attention_mask=mask).logits
    assert torch.equal(remote[mask.bool()], local[mask.bool()])
    assert remote.shape == (3, 11, VOCAB)
