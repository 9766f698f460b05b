"""`device_map="auto"` with a `max_memory` that forces a split: CPU plus disk offload (accelerate), same logits."""

from __future__ import annotations

import torch
from accelerate.utils import compute_module_sizes
from transformers import AutoModelForCausalLM, AutoTokenizer

from modeling_llama import LlamaPaperForCausalLM


def test_device_map_auto_with_disk_offload_gives_the_same_logits(tiny_folder, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_folder)
    tokenizer.pad_token = tokenizer.unk_token  # LLaMA has none; left padding
    inputs = tokenizer(["The quick brown fox", "jumps"], padding=True, return_tensors="pt")
    reference = LlamaPaperForCausalLM.from_pretrained(tiny_folder).eval()
    # A "CPU" a little smaller than the whole model (accelerate also keeps room for the largest layer, lm_head):
    # the embedding and the first block stay, the rest is offloaded to disk.
    sizes = compute_module_sizes(reference)
    budget = sizes[""] - sizes["model.layers.1"] // 2
    model = AutoModelForCausalLM.from_pretrained(
        tiny_folder, device_map="auto", max_memory={"cpu": budget}, offload_folder=str(tmp_path / "offload")
    ).eval()
    placements = set(model.hf_device_map.values())
    assert placements == {"cpu", "disk"} and model.hf_device_map["lm_head"] == "disk", model.hf_device_map
    with torch.no_grad():
        expected = reference(**inputs).logits
        got = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=0)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert torch.equal(generated, reference.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=0))
