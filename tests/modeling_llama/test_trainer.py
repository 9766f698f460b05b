"""transformers.Trainer fine-tunes our model on CPU, as it does its own Llama."""

from __future__ import annotations

import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments, default_data_collator

from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM


def test_trainer_steps_lower_the_loss(tmp_path):
    torch.manual_seed(0)
    model = LlamaPaperForCausalLM(LlamaPaperConfig.from_preset("tiny", vocab_size=64))
    # A learnable pattern: repeating 0..63 sequences, so a few steps must lower the loss clearly.
    rows = [{"input_ids": [(i + j) % 64 for j in range(32)]} for i in range(64)]
    data = Dataset.from_list([{**r, "labels": r["input_ids"]} for r in rows])
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, gradient_accumulation_steps=2, max_steps=12,
        learning_rate=3e-3, warmup_steps=2, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        dataloader_num_workers=0, seed=0, activation_checkpointing=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=default_data_collator)
    assert trainer.model_accepts_loss_kwargs  # num_items_in_batch reaches our loss
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 12 and losses[-1] < losses[0] - 0.5, losses
