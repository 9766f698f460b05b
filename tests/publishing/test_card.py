"""The model card built from a folder's files: metadata the Hub reads, parsed back offline with huggingface_hub."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from publishing.card import META_LICENSE, validate_card, write_card

REPORT = {  # the shape `llama-paper eval` writes (evaluation/runner.py + cli.annotate_with_paper)
    "model": "tiny", "protocol": "paper", "versions": {"llama_paper": "0.1.0"},
    "results": {"piqa": {"metrics": {"acc": {"value": 0.62, "stderr": 0.011}}, "protocol": "paper",
                         "num_fewshot": 0, "n": 1838, "primary_metric": "acc",
                         "dataset": {"path": "ybisk/piqa", "name": None, "split": "validation"},
                         "paper": {"metric": "accuracy", "shots": 0, "scores": [79.8, 80.1, 82.3, 82.8]}},
                "perplexity": {"metrics": {"word_perplexity": {"value": 41.5, "stderr": None}}, "protocol": "paper",
                               "num_fewshot": 0, "n": 62,
                               "dataset": {"path": "EleutherAI/wikitext_document_level",
                                           "name": "wikitext-2-raw-v1", "split": "test"}}},
}


@pytest.fixture()
def pretrained_folder(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama_paper", "auto_map": {}, "hidden_size": 64}))
    summary = {"name": "run", "run_config": {"learning_rate": 3e-4, "adam_beta2": 0.95}, "parameters": 1000,
               "steps": 10, "tokens_seen": 5000, "heldout": {"wiki": {"loss": 3.2, "perplexity": 24.5}},
               "mixture": {"wiki": {"weight": 0.5, "dataset": "togethercomputer/RedPajama-Data-1T",
                                    "config": "wikipedia"},
                           "local": {"weight": 0.5, "dataset": None}}}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "loss_curve.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "results.json").write_text(json.dumps(REPORT))
    return folder


def test_card_metadata_and_model_index_parse_back(pretrained_folder, tmp_path):
    path = write_card(pretrained_folder, results=[tmp_path / "results.json"], model_name="user/run",
                      license="meta-llama")
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert {k: data[k] for k in META_LICENSE} == META_LICENSE
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert data["language"] == ["en"] and "custom_code" in data["tags"] and "pretraining" in data["tags"]
    assert data["datasets"] == ["togethercomputer/RedPajama-Data-1T"]  # Hub sources only
    name, results = model_index_to_eval_results(data["model-index"])
    assert name == "user/run"
    got = {(r.dataset_type, r.dataset_config, r.dataset_split, r.metric_type, r.metric_value,
            r.dataset_args["num_few_shot"], r.metric_args["protocol"]) for r in results}
    assert got == {("ybisk/piqa", None, "validation", "acc", 0.62, 0, "paper"),
                   ("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", "test", "word_perplexity", 41.5, 0,
                    "paper")}
    body = card.text
    assert "| piqa | paper | acc | 0 | 1838 | 62.0 ± 1.1 | 79.8 | 80.1 | 82.3 | 82.8 |" in body  # stderr in text
    assert "| perplexity | paper | word_perplexity | 0 | 62 | 41.5 | – | – | – | – |" in body
    for expected in ("learning_rate", "0.95", "![training loss](loss_curve.png)", "24.5"):
        assert expected in body
    assert validate_card(path.read_text()) == []


def test_rebuild_keeps_options_and_merges_new_results(pretrained_folder, tmp_path):
    write_card(pretrained_folder, results=[tmp_path / "results.json"], license="apache-2.0",
               base_model="user/base", base_model_relation="finetune")
    newer = json.loads(json.dumps(REPORT))
    newer["results"] = {"piqa": {**REPORT["results"]["piqa"], "metrics": {"acc": {"value": 0.7, "stderr": 0.01}}}}
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    path = write_card(pretrained_folder, results=[tmp_path / "newer.json"])  # no options: the card's are kept
    data = ModelCard.load(path).data.to_dict()
    assert data["license"] == "apache-2.0" and data["base_model"] == "user/base"
    assert data["base_model_relation"] == "finetune"
    _, results = model_index_to_eval_results(data["model-index"])
    assert sorted((r.metric_type, r.metric_value) for r in results) == [("acc", 0.7), ("word_perplexity", 41.5)]


def test_hand_written_card_keeps_its_body_and_bad_model_index_is_refused(pretrained_folder):
    (pretrained_folder / "README.md").write_text("---\nlicense: mit\n---\n# Mine\n\nMy own words.\n")
    text = write_card(pretrained_folder).read_text()
    assert text.endswith("# Mine\n\nMy own words.\n") and "library_name: transformers" in text
    bad = "---\nmodel-index:\n- name: x\n  results:\n  - task: {}\n---\nbody\n"
    (pretrained_folder / "README.md").write_text(bad)
    with pytest.raises(ValueError, match="model_index"):
        write_card(pretrained_folder)
    assert (pretrained_folder / "README.md").read_text() == bad  # nothing written over
    assert validate_card(bad) and validate_card("---\nlicense: other\n---\nx\n")  # other needs a license_name


def test_results_file_errors_name_the_file(pretrained_folder, tmp_path):
    (tmp_path / "notes.json").write_text(json.dumps({"accuracy": 1}))
    with pytest.raises(ValueError, match="notes.json has no 'results'"):
        write_card(pretrained_folder, results=[tmp_path / "notes.json"])
    with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
        write_card(pretrained_folder, results=[tmp_path / "missing.json"])


def test_a_pushed_folder_knows_its_repo_id(pretrained_folder, tmp_path):
    from publishing.card import published_repo_id

    assert published_repo_id(pretrained_folder) is None
    write_card(pretrained_folder, model_name="user/run")  # what `llama-paper push --repo-id user/run` writes
    assert published_repo_id(pretrained_folder) == "user/run"
    write_card(pretrained_folder, results=[tmp_path / "results.json"])  # with a model-index too
    assert published_repo_id(pretrained_folder) == "user/run"
