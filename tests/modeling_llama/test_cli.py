"""`llama-paper generate` and `llama-paper info` on a saved tiny model."""

from __future__ import annotations

import torch

from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM, LlamaPaperTokenizerFast
from modeling_llama.cli import main
from modeling_llama.flops import count_parameters
from modeling_llama.generate import generate_text, load_model_and_tokenizer


def _saved_tiny(tmp_path, fixtures):
    torch.manual_seed(0)
    model = LlamaPaperForCausalLM(LlamaPaperConfig.from_preset("tiny"))
    model.save_pretrained(tmp_path)
    LlamaPaperTokenizerFast(vocab_file=str(fixtures / "llama-tokenizer" / "tokenizer.model")).save_pretrained(tmp_path)
    return model


def test_generate_streams_the_same_text_as_generate(tmp_path, fixtures, capsys):
    model = _saved_tiny(tmp_path, fixtures).eval()
    code = main(["generate", "--model", str(tmp_path), "--prompt", "Hello", "--max-new-tokens", "6",
                 "--temperature", "0"])
    assert code == 0
    printed = capsys.readouterr().out
    loaded, tokenizer = load_model_and_tokenizer(tmp_path)
    ids = tokenizer("Hello", return_tensors="pt")["input_ids"]
    expected = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=2)[0, ids.shape[1]:]
    text = tokenizer.decode(expected, skip_special_tokens=True)
    assert text.strip() and ("Hello" + text) in printed
    assert generate_text(loaded, tokenizer, "Hello", max_new_tokens=6, temperature=0) == text


def test_info_prints_exact_parameter_count(tmp_path, fixtures, capsys):
    model = _saved_tiny(tmp_path, fixtures)
    assert main(["info", "--model", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{sum(p.numel() for p in model.parameters()):,}" in out
    assert main(["info", "--preset", "13B"]) == 0
    assert f"{count_parameters(LlamaPaperConfig.from_preset('13B')):,}" in capsys.readouterr().out


def test_missing_model_folder_names_the_problem(tmp_path, capsys):
    import pytest

    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model_and_tokenizer(tmp_path / "nope")
    # `info` used to surface transformers' "Repo id must be in the form 'repo_name'..." for a missing folder.
    assert main(["info", "--model", str(tmp_path / "nope")]) == 2
    assert f"--model {tmp_path / 'nope'}: no config.json there" in capsys.readouterr().err


def test_bad_input_to_any_subcommand_is_one_line_and_exit_code_2(tmp_path, capsys):
    missing = tmp_path / "no-such-checkpoint"
    assert main(["convert-meta", "--input-dir", str(missing), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("llama-paper convert-meta: error:") and str(missing) in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "out").exists()
