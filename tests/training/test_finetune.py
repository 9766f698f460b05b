"""`llama-paper finetune`: prompt tokens are masked out of the loss, Trainer fine-tunes our model and saves a
folder that reloads, LoRA works through peft (or says clearly that peft is missing), bad data is a clear error."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch

import modeling_llama  # noqa: F401
from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM
from modeling_llama.cli import main as llama_paper
from training.finetune import IGNORE_INDEX, PadCollator, encode_record, load_records, with_targets

from .pretrain_helpers import tiny_tokenizer_dir

PAIRS = [{"prompt": "Question: who wrote Hamlet?\nAnswer:", "response": " William Shakespeare"},
         {"prompt": "Question: who fell down the rabbit hole?\nAnswer:", "response": " Alice"}]
# The training text is exactly prompt + response: no space may appear at the boundary, none may be lost.
BOUNDARY_CASES = [("Say hi\n", "hello"), ("Answer:", " cat"), ("Q: 2+2=", "4"),
                  ("Übersetze ins Deutsche:\n", "Grüße, naïve café 日本語 ✓"), ("Café ☕:", " très ñ"),
                  (PAIRS[0]["prompt"], PAIRS[0]["response"])]


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


def piece_text(tokenizer, ids: list[int]) -> str:
    """The text that SentencePiece pieces spell ("▁" is a space, <0xHH> a byte), with no decoder clean-up."""
    spelled = b""
    for piece in tokenizer.convert_ids_to_tokens(ids):
        byte = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", piece)
        spelled += bytes([int(byte.group(1), 16)]) if byte else piece.replace("\u2581", " ").encode("utf-8")
    return spelled.decode("utf-8")


@pytest.mark.parametrize("prompt, response", BOUNDARY_CASES)
def test_pair_is_the_joint_tokenization_with_the_prompt_masked(tokenizer, prompt, response):
    example = encode_record({"prompt": prompt, "response": response}, tokenizer, max_length=512)
    ids, labels = example["input_ids"], example["labels"]
    # Independent reference: the tokenizer's own encoding of the one training string (BOS first), then EOS.
    assert ids == tokenizer(prompt + response)["input_ids"] + [tokenizer.eos_token_id]
    assert ids[0] == tokenizer.bos_token_id
    masked = labels.index(next(label for label in labels if label != IGNORE_INDEX))
    assert labels == [IGNORE_INDEX] * masked + ids[masked:]  # -100 over a prefix only, targets = ids elsewhere
    # The masked tokens spell exactly the prompt (after BOS and SentencePiece's dummy-prefix space) ...
    assert piece_text(tokenizer, ids[1:masked]) == " " + prompt
    assert tokenizer.decode(ids[:masked], skip_special_tokens=True) == prompt
    # ... and the targets exactly the response, then EOS: no extra "▁" at the boundary, nothing dropped.
    assert piece_text(tokenizer, ids[masked:-1]) == response
    assert ids[-1] == labels[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == prompt + response


def test_a_token_straddling_the_boundary_belongs_to_the_prompt(tokenizer):
    prompt, response = "Grüße, ", "naïve"  # "▁n" spans the prompt's last space and the response's first letter
    example = encode_record({"prompt": prompt, "response": response}, tokenizer, max_length=512)
    assert example["input_ids"] == tokenizer(prompt + response)["input_ids"] + [tokenizer.eos_token_id]
    masked = example["labels"].count(IGNORE_INDEX)
    assert tokenizer.convert_ids_to_tokens(example["input_ids"][masked - 1]) == "\u2581n"
    assert piece_text(tokenizer, example["input_ids"][masked:-1]) == "aïve"


def test_slow_tokenizer_masks_the_same_tokens_or_says_to_use_the_fast_one(tokenizer):
    from modeling_llama import LlamaPaperTokenizer
    slow = LlamaPaperTokenizer.from_pretrained(tiny_tokenizer_dir())
    assert not slow.is_fast and tokenizer.is_fast
    for prompt, response in BOUNDARY_CASES:
        record = {"prompt": prompt, "response": response}
        assert encode_record(record, slow, 512) == encode_record(record, tokenizer, 512)
    with pytest.raises(ValueError, match="load the fast tokenizer"):
        encode_record({"prompt": "Grüße, ", "response": "naïve"}, slow, 512)


def test_plain_text_and_truncation(tokenizer):
    plain = encode_record({"text": "To be, or not to be"}, tokenizer, max_length=512)
    assert plain["input_ids"] == tokenizer("To be, or not to be")["input_ids"] + [tokenizer.eos_token_id]
    assert plain["labels"] == plain["input_ids"]
    cut = encode_record({"text": "To be, or not to be"}, tokenizer, max_length=4)
    assert cut["labels"] == cut["input_ids"] == plain["input_ids"][:4]  # truncated, all targets
    whole = encode_record(PAIRS[0], tokenizer, max_length=512)
    masked = whole["labels"].count(IGNORE_INDEX)
    short = encode_record(PAIRS[0], tokenizer, max_length=masked + 2)  # the response loses its tail and EOS
    assert short["input_ids"] == whole["input_ids"][:masked + 2]
    assert short["labels"] == [IGNORE_INDEX] * masked + whole["input_ids"][masked:masked + 2]


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


def test_finetune_cli_trains_and_saves_a_folder_that_reloads(tmp_path, base_model, tokenizer, capsys):
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
    # A second run into the same folder (or into the base model's own folder) must not replace a model silently.
    for target in (out, base_model):
        again = ["finetune", "--model", str(base_model), "--data", str(data), "--output-dir", str(target),
                 "--max-steps", "1"]
        assert llama_paper(again) == 2
        assert f"--output-dir {target} already holds a model (config.json); pass --overwrite" in capsys.readouterr().err
    assert llama_paper(["finetune", "--model", str(base_model), "--data", str(data), "--output-dir", str(out),
                        "--max-steps", "1", "--overwrite"]) == 0


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
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "fine"}\n')
    for model in (tmp_path / "no-such-model", tmp_path):  # missing, and a folder that holds no model
        assert llama_paper(["finetune", "--model", str(model), "--data", str(good)]) == 2
        assert f"--model {model}: no saved model there (no config.json)" in capsys.readouterr().err


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
