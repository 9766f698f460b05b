"""`AutoModelForSequenceClassification` from our causal-LM folder: the score reads the last real token."""

from __future__ import annotations

import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

from modeling_llama import LlamaPaperForCausalLM, LlamaPaperForSequenceClassification

TEXTS = ["a short one", "a much longer sentence that needs no padding at all", "mid length text"]


def test_classifier_from_causal_folder_scores_the_last_token_with_left_padding(tiny_folder):
    tokenizer = AutoTokenizer.from_pretrained(tiny_folder)
    tokenizer.pad_token = tokenizer.unk_token  # LLaMA has no pad token; any id that never occurs in the text
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_folder, num_labels=3, pad_token_id=tokenizer.pad_token_id
    ).eval()
    assert isinstance(model, LlamaPaperForSequenceClassification)
    causal = LlamaPaperForCausalLM.from_pretrained(tiny_folder)
    for name, tensor in causal.model.state_dict().items():  # the body is the checkpoint's, only `score` is new
        assert torch.equal(model.model.state_dict()[name], tensor), name

    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert tokenizer.padding_side == "left" and (batch["attention_mask"][:, 0] == 0).any()
    with torch.no_grad():
        batched = model(**batch).logits
        alone = torch.cat([model(**tokenizer(t, return_tensors="pt")).logits for t in TEXTS])
        hidden = model.model(**tokenizer(TEXTS[0], return_tensors="pt")).last_hidden_state[0, -1]
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone[0], model.score(hidden), rtol=1e-5, atol=1e-5)
    # A row whose last real token is the pad id (a real <unk>, as models without byte fallback produce): the
    # attention mask, not the pad id, says where the text ends.
    row = tokenizer(TEXTS[0])["input_ids"] + [tokenizer.pad_token_id]
    ids = torch.tensor([[tokenizer.pad_token_id] * 3 + row])
    mask = torch.tensor([[0] * 3 + [1] * len(row)])
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask).logits[0]
        last = model.score(model.model(torch.tensor([row])).last_hidden_state[0, -1])
    torch.testing.assert_close(padded, last, rtol=1e-5, atol=1e-5)

    # A couple of Trainer steps train the head and the body.
    data = Dataset.from_dict({"text": TEXTS * 2, "label": [0, 1, 2] * 2})
    data = data.map(lambda row: tokenizer(row["text"]), remove_columns=["text"])
    before = model.score.weight.detach().clone()
    args = TrainingArguments(output_dir=str(tiny_folder.parent / "cls-run"), per_device_train_batch_size=3,
                             max_steps=2, learning_rate=1e-2, report_to=[], save_strategy="no", use_cpu=True)
    result = Trainer(model=model.train(), args=args, train_dataset=data, processing_class=tokenizer).train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.equal(model.score.weight.detach(), before)
