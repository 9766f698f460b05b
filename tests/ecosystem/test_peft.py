"""PEFT LoRA on our model: train, save the adapter, reload it, merge, save, reload: the same logits throughout."""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from modeling_llama import LlamaPaperForCausalLM


def test_lora_train_save_reload_merge_gives_the_same_logits(tiny_folder, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_folder)
    batch = tokenizer("Alice was beginning to get very tired of sitting by her sister", return_tensors="pt")
    base = AutoModelForCausalLM.from_pretrained(tiny_folder)
    with torch.no_grad():
        base_logits = base(**batch).logits
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(base, lora)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(4):
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        trained = model(**batch).logits
    assert not torch.allclose(trained, base_logits, atol=1e-3)  # the adapter does something
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()

    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_folder), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, trained, rtol=0, atol=1e-5)
    merged = reloaded.merge_and_unload()
    assert isinstance(merged, LlamaPaperForCausalLM)
    merged.save_pretrained(tmp_path / "merged")
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert isinstance(final, LlamaPaperForCausalLM)
    with torch.no_grad():
        torch.testing.assert_close(final(**batch).logits, trained, rtol=0, atol=1e-4)
