"""`llama-paper finetune`: prompt tokens are masked out of the loss, Trainer fine-tunes our model and saves a
folder that reloads, LoRA works through peft (or says clearly that peft is missing), bad data is a clear error."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

import modeling_llama  # noqa: F401
from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM
from modeling_llama.cli import main as llama_paper
from training.finetune import IGNORE_INDEX, PadCollator, encode_record, load_records, with_targets

from .pretrain_helpers import tiny_tokenizer_dir

PAIRS = [{"prompt": "Question: who wrote Hamlet?\nAnswer:", "response": "William Shakespeare"},
         {"prompt": "Question: who fell down the rabbit hole?\nAnswer:", "response": "Alice"}]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir())


@pytest.fixture(scope="module")
def base_model(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    model = LlamaPaperForCausalLM(LlamaPaperConfig.from_preset("tiny", vocab_size=len(tokenizer)))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_prompt_is_masked_and_response_ends_with_eos(tokenizer):
    example = encode_record(PAIRS[0], tokenizer, max_length=512)
    prompt_ids = tokenizer(PAIRS[0]["prompt"])["input_ids"]
    response_ids = tokenizer(PAIRS[0]["response"], add_special_tokens=False)["input_ids"]
    assert example["input_ids"] == prompt_ids + response_ids + [tokenizer.eos_token_id]
    assert example["labels"] == [IGNORE_INDEX] * len(prompt_ids) + response_ids + [tokenizer.eos_token_id]
    assert prompt_ids[0] == tokenizer.bos_token_id
    plain = encode_record({"text": "To be, or not to be"}, tokenizer, max_length=4)
    assert plain["labels"] == plain["input_ids"] and len(plain["input_ids"]) == 4  # truncated, all targets


def test_loss_counts_only_response_tokens(tokenizer, base_model):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(base_model).eval()
    batch = PadCollator(tokenizer.eos_token_id)([encode_record(p, tokenizer, 512) for p in PAIRS])
    assert batch["attention_mask"].sum() == sum(len(encode_record(p, tokenizer, 512)["input_ids"]) for p in PAIRS)
    with torch.no_grad():
        loss = model(**batch).loss
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # Independent reference: mean CE over exactly the response (+EOS) positions, predicted from the previous one.
    terms = []
    for row, example in enumerate(encode_record(p, tokenizer, 512) for p in PAIRS):
        for t, label in enumerate(example["labels"]):
            if label != IGNORE_INDEX:
                terms.append(-torch.log_softmax(logits[row, t - 1], -1)[label])
    torch.testing.assert_close(loss, torch.stack(terms).mean(), rtol=1e-5, atol=1e-6)


def test_finetune_cli_trains_and_saves_a_folder_that_reloads(tmp_path, base_model, tokenizer):
    from transformers import AutoModelForCausalLM
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS * 8))
    out = tmp_path / "out"
    code = llama_paper(["finetune", "--model", str(base_model), "--data", str(data), "--output-dir", str(out),
                        "--max-steps", "30", "--learning-rate", "3e-3", "--batch-size", "4", "--logging-steps", "5"])
    assert code == 0
    tuned = AutoModelForCausalLM.from_pretrained(out).eval()
    base = AutoModelForCausalLM.from_pretrained(base_model).eval()
    batch = PadCollator(tokenizer.eos_token_id)([encode_record(p, tokenizer, 512) for p in PAIRS])
    with torch.no_grad():
        assert tuned(**batch).loss < base(**batch).loss - 1.0  # it learnt the responses
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama_paper"


def test_lora_trains_adapters_only_or_names_the_missing_extra(tmp_path, base_model):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS * 4))
    args = ["finetune", "--model", str(base_model), "--data", str(data), "--output-dir", str(tmp_path / "lora"),
            "--max-steps", "4", "--lora", "--batch-size", "4"]
    if importlib.util.find_spec("peft") is None:
        from training.finetune import finetune
        with pytest.raises(ImportError, match=r"pip install 'llama-paper\[peft\]'"):
            finetune(str(base_model), str(data), str(tmp_path / "lora"), lora=True, max_steps=1)
    else:
        assert llama_paper(args) == 0
        assert (tmp_path / "lora" / "adapter_config.json").is_file()
        assert not list((tmp_path / "lora").glob("model*.safetensors"))  # only the adapter is saved


def test_bad_data_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"prompt": "no response"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2 needs a string field 'text'"):
        load_records(bad)
    assert llama_paper(["finetune", "--model", "x", "--data", str(tmp_path / "missing.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_examples_whose_prompt_fills_max_length_are_skipped(tmp_path, tokenizer, base_model, capsys):
    fits = len(encode_record(PAIRS[1], tokenizer, 512)["input_ids"])  # the shorter example, whole
    long_prompt = {"prompt": PAIRS[0]["prompt"] * 4, "response": "Shakespeare"}
    examples = [encode_record(r, tokenizer, fits) for r in (PAIRS[1], long_prompt)]
    assert set(examples[1]["labels"]) == {IGNORE_INDEX}  # truncation cut the whole response
    with pytest.warns(UserWarning, match="Skipped 1 of 2 examples"):
        assert with_targets(examples) == examples[:1]
    # Nothing left to learn: a clear error instead of a run that logs a loss of 0.
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps(long_prompt) + "\n")
    assert llama_paper(["finetune", "--model", str(base_model), "--data", str(data), "--output-dir",
                        str(tmp_path / "out"), "--max-length", str(fits), "--max-steps", "1"]) == 2
    assert "no response token is left" in capsys.readouterr().err
