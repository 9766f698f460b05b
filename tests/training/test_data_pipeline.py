"""`llama-paper prepare-data` on the shipped sample of the paper's seven sources: each §2.1 step keeps and drops the
documents written to exercise it (with the reason), the token shards are raw SentencePiece's ids with BOS/EOS, and
the report's counts add up."""

from __future__ import annotations

import gzip
import re
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("datatrove")

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "data-pipeline"
TOKENIZER = Path(__file__).resolve().parents[1] / "fixtures" / "llama-tokenizer" / "tokenizer.model"


def build_models(folder: Path) -> None:
    """The tiny wikiref classifier and n-gram model the sample config names, trained from the shipped texts."""
    from training.data.pipeline.models import train_ngram, train_quality_classifier

    texts = folder / "model_texts"
    positive = (texts / "wikiref_positive.txt").read_text().split("\n\n")
    negative = (texts / "random_negative.txt").read_text().split("\n\n")
    train_quality_classifier(positive, negative, folder / "models" / "wikiref-v1.bin", bucket=20000)
    train_ngram(positive, folder / "models" / "cc-v1.arpa", tokenizer=folder.parent / "llama-tokenizer")


def sample_copy(tmp: Path, models: bool = True) -> Path:
    """The sample folder (and the tokenizer the config points at) copied under `tmp`, models built."""
    folder = tmp / "data-pipeline"
    shutil.copytree(FIXTURE, folder)
    (tmp / "llama-tokenizer").mkdir()
    shutil.copy(TOKENIZER, tmp / "llama-tokenizer" / "tokenizer.model")
    if models:
        build_models(folder)
    return folder


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from training.data.pipeline.config import load_data_config
    from training.data.pipeline.prepare import prepare_data

    tmp = tmp_path_factory.mktemp("prepare")
    folder = sample_copy(tmp)
    out = tmp / "out"
    prepare_data(load_data_config(folder / "sample.yaml"), out, tasks=2)
    return folder, out


def records(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            rows += [json.loads(line) for line in handle if line.strip()]
    return rows


def kept(out: Path, source: str) -> list[dict]:
    return records(out / "docs" / source)


def dropped(out: Path, source: str) -> dict[str, str]:
    """id -> filter reason of every dropped document of a source."""
    result = {}
    for step in sorted((out / "excluded" / source).glob("*")):
        if step.name != "removed_lines":
            for row in records(step):
                result[row["id"]] = row["metadata"].get("filter_reason") or step.name
    return result


def test_commoncrawl_line_dedup_language_and_perplexity(prepared):
    _, out = prepared
    docs = kept(out, "common_crawl")
    texts = [d["text"] for d in docs]
    nav, copyright_line = "Home | News | About us | Contact", "Copyright 2023 Example Media Group. All rights reserved."
    # Line dedup across documents: the boilerplate lines survive in exactly one document.
    assert sum(nav in t.splitlines() for t in texts) == 1
    assert sum(copyright_line in t.splitlines() for t in texts) == 1
    assert len(docs) == 6
    reasons = dropped(out, "common_crawl")
    by_url = {r: reason for r, reason in reasons.items()}
    assert sorted(by_url.values()) == ["empty_after_line_dedup", "language", "language", "perplexity"]
    excluded = {row["metadata"]["url"]: row["metadata"].get("filter_reason") for step in
                (out / "excluded" / "common_crawl").glob("*") if step.name != "removed_lines" for row in records(step)}
    assert excluded["https://example.fr/lyon"] == "language"  # non-English dropped
    assert excluded["https://example.de/hamburg"] == "language"
    assert excluded["https://spam.example.com/"] == "perplexity"
    assert excluded["https://example.org/empty"] == "empty_after_line_dedup"
    assert all(d["metadata"]["language"] == "en" and d["metadata"]["perplexity"] < 1e6 for d in docs)
    assert all("wikiref_score" in d["metadata"] for d in docs)


def arpa_unigrams(path: Path) -> set[str]:
    """The words (here: pieces) of an ARPA file's 1-gram section."""
    text = path.read_text(encoding="utf-8")
    section = text.split("\\1-grams:")[1].split("\\2-grams:")[0]
    return {line.split("\t")[1] for line in section.splitlines() if "\t" in line}


def test_ngram_filter_scores_sentencepiece_pieces(prepared, tmp_path):
    import kenlm
    import sentencepiece as spm

    from training.data.pipeline.filters import PerplexityFilter, ccnet_normalize

    folder, _ = prepared
    model = folder / "models" / "cc-v1.arpa"
    # The tokenizer it was trained with is recorded beside it, and its vocabulary is that tokenizer's pieces.
    assert (folder / "models" / "cc-v1.sp.model").read_bytes() == TOKENIZER.read_bytes()
    sp, lm = spm.SentencePieceProcessor(model_file=str(TOKENIZER)), kenlm.Model(str(model))
    unigrams = arpa_unigrams(model) - {"<s>", "</s>", "<unk>"}
    assert "▁the" in unigrams and all(sp.piece_to_id(u) != sp.unk_id() for u in unigrams)
    # The filter's perplexity is KenLM's over raw SentencePiece pieces (per piece, one </s> per line).
    text = "The Elbe is one of the major rivers of Central Europe.\n\nIt flows 1,094 km to the North Sea!"
    lines = [sp.encode(ccnet_normalize(line), out_type=str) for line in text.splitlines() if line.strip()]
    log10 = sum(lm.score(" ".join(pieces), bos=True, eos=True) for pieces in lines)
    expected = 10 ** (-log10 / sum(len(pieces) + 1 for pieces in lines))
    assert PerplexityFilter(model, 1e5).perplexity(text) == pytest.approx(expected, rel=1e-9)
    # A model without its tokenizer is refused with the fix in the message.
    shutil.copy(model, tmp_path / "lonely.arpa")
    with pytest.raises(FileNotFoundError, match="train-ngram --tokenizer"):
        PerplexityFilter(tmp_path / "lonely.arpa", 1e5)


def test_train_ngram_command_needs_and_records_the_tokenizer(tmp_path, capsys):
    from modeling_llama.cli import main

    corpus = tmp_path / "wiki.txt"
    corpus.write_text("The river flows to the sea.\n\nThe sea is wide and the river is long.\n", encoding="utf-8")
    with pytest.raises(SystemExit):  # argparse: --tokenizer is required
        main(["train-ngram", str(corpus), "--output", str(tmp_path / "lm.arpa")])
    assert "--tokenizer" in capsys.readouterr().err
    assert main(["train-ngram", str(corpus), "--output", str(tmp_path / "lm.arpa"), "--tokenizer",
                 str(TOKENIZER.parent)]) == 0
    assert (tmp_path / "lm.sp.model").read_bytes() == TOKENIZER.read_bytes()
    assert {"▁river", "▁sea"} <= arpa_unigrams(tmp_path / "lm.arpa")


def test_c4_heuristics(prepared):
    _, out = prepared
    assert sorted(dropped(out, "c4").values()) == ["curly_bracket", "lorem_ipsum", "too_few_sentences"]
    assert len(kept(out, "c4")) == 2


def test_github_licences_heuristics_and_file_dedup(prepared):
    _, out = prepared
    docs = {d["metadata"]["repo_name"]: d for d in kept(out, "github")}
    assert set(docs) == {"alice/mathutils", "carol/tools"}  # MIT (detected from its LICENSE text), Apache
    assert docs["alice/mathutils"]["metadata"]["license"] == "MIT"
    excluded = {row["metadata"]["repo_name"] + "/" + row["metadata"]["path"]: row["metadata"].get("filter_reason")
                or step.name for step in (out / "excluded" / "github").glob("*") for row in records(step)}
    assert excluded == {"bob/gplproject/close.py": "license_not_permissive",  # GPL-3.0 detected from its text
                        "frank/noinfo/x.py": "license_unknown", "erin/min/app.min.js": "max_line_length",
                        "erin/min/table.h": "alnum_fraction", "dave/fork-of-tools/paren.py": "file_dedup"}


def test_wikipedia_markup_and_languages(prepared):
    _, out = prepared
    docs = {d["metadata"]["title"]: d["text"] for d in kept(out, "wikipedia")}
    assert set(docs) == {"Elbe", "Lyon"}  # ja is not one of the paper's 20 languages
    elbe = docs["Elbe"]
    assert elbe.startswith("The Elbe is one of the major rivers of Central Europe. It rises in the Giant Mountains")
    for markup in ("[[", "{{", "<ref", "'''", "See also", "References", "Category", "wikitable", "<!--", "=="):
        assert markup not in elbe, markup
    assert "Course\nThe river passes Dresden and Hamburg." in elbe
    assert "Voir aussi" not in docs["Lyon"] and "commune située au confluent du Rhône" in docs["Lyon"]


def test_books_near_duplicates(prepared):
    _, out = prepared
    assert {d["id"] for d in kept(out, "books")} == {"alice", "alice_70", "shakespeare"}  # 70% overlap kept
    assert list(dropped(out, "books")) == ["alice_95"]  # >90% overlap with Alice removed
    alice = next(d["text"] for d in kept(out, "books") if d["id"] == "alice")
    assert "*** START OF" not in alice and "*** END OF" not in alice and "eBook" not in alice[:300]  # licence
    assert "Alice’s Adventures in Wonderland" in alice[:200]


def test_arxiv_latex_cleaning(prepared):
    _, out = prepared
    (doc,) = kept(out, "arxiv")
    text = doc["text"]
    assert text.startswith("\\section{Introduction}")  # preamble and abstract gone
    assert "Let $x \\in \\mathbb{R}$ and $\\varepsilon > 0$." in text  # user macros expanded
    assert "We train \\textsc{LLaMA}{} on public data." in text
    assert "TODO" not in text and "bibitem" not in text and "\\newcommand" not in text
    assert dropped(out, "arxiv") == {next(iter(dropped(out, "arxiv"))): "no_section"}


def test_stackexchange_answers_sorted_and_html_removed(prepared):
    _, out = prepared
    texts = [d["text"] for d in kept(out, "stackexchange")]
    qa = next(t for t in texts if t.startswith("Q:"))
    answers = [part for part in qa.split("\n\n") if part.startswith("A:")]
    assert [a.split()[1] for a in answers] == ["Rest", "Overnight", "About"]  # scores 42, 7, 1
    assert "<p>" not in qa and "<b>" not in qa and "if dough.doubled(): bake()" in qa
    assert "Plain post with a link and & an entity.\n" in texts


def test_token_shards_are_sentencepiece_ids_with_bos_eos(prepared):
    import sentencepiece as spm

    _, out = prepared
    sp = spm.SentencePieceProcessor(model_file=str(TOKENIZER))
    for source in ("common_crawl", "books", "github", "stackexchange"):
        expected = [[sp.bos_id(), *ids, sp.eos_id()] for ids in sp.encode([d["text"] for d in kept(out, source)])]
        got = []
        for shard in sorted((out / "tokens" / source).glob("*.ds")):
            tokens = np.fromfile(shard, dtype=np.uint16)
            ends = np.fromfile(f"{shard}.index", dtype=np.uint64)
            starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
            got += [tokens[s:e].tolist() for s, e in zip(starts, ends.astype(np.int64))]
            assert (int(ends[-1]) if len(ends) else 0) == len(tokens)
        assert got == expected, source


def test_report_counts_add_up(prepared):
    folder, out = prepared
    report = json.loads((out / "report.json").read_text())
    assert set(report["sources"]) == {"common_crawl", "c4", "github", "wikipedia", "books", "arxiv", "stackexchange"}
    for name, row in report["sources"].items():
        inputs = sum(1 for path in (folder / name).glob("*.jsonl") for line in path.read_text().splitlines() if line)
        assert row["documents_in"] == inputs, name
        assert row["documents_out"] + row["documents_dropped"] == inputs, name
        assert row["documents_tokenized"] == row["documents_out"], name
        tokens = sum(len(np.fromfile(p, dtype=np.uint16)) for p in (out / "tokens" / name).glob("*.ds"))
        assert row["tokens"] == tokens and row["token_shard_bytes"] == 2 * tokens
    assert abs(sum(r["sampling_proportion"] for r in report["sources"].values()) - 1) < 1e-9
    table = (out / "report.md").read_text()
    assert "| Dataset | Sampling prop. | Epochs | Disk size |" in table and "| books | 4.5% |" in table
    mixture = (out / "mixture.yaml").read_text()
    assert "tokens: tokens/common_crawl" in mixture


def _outputs(out: Path, sources: list[str]) -> dict:
    """What a run produced: each source's kept texts and ids, dropped ids and its token shards' bytes."""
    result = {}
    for source in sources:
        result[source] = {"docs": [(d["id"], d["text"]) for d in kept(out, source)],
                          "dropped": sorted(dropped(out, source).items()),
                          "tokens": [p.read_bytes() for p in sorted((out / "tokens" / source).glob("*.ds*"))]}
    return result


def test_killed_prepare_data_continues_to_the_uninterrupted_output(prepared, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    folder, reference = prepared
    out = tmp_path / "out"
    command = [sys.executable, "-m", "modeling_llama.cli", "prepare-data", "--config", str(folder / "sample.yaml"),
               "--output-dir", str(out), "--tasks", "2", "--sources", "github,books"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    marker = out / "logs" / "github" / "exact_dedup_signatures" / "completions"
    deadline = time.monotonic() + 300
    while not (marker.is_dir() and any(marker.iterdir())) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # mid-chain: signatures done, dedup and books not
    process.wait()
    assert not (out / "tokens" / "books").exists() and not (out / "report.json").exists()
    done_before = {p: p.stat().st_mtime_ns for p in (out / "logs" / "github" / "filter" / "completions").iterdir()}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # The completed tasks were skipped, not redone; the output equals the uninterrupted run's.
    assert {p: p.stat().st_mtime_ns for p in done_before} == done_before
    assert _outputs(out, ["github", "books"]) == _outputs(reference, ["github", "books"])
    report = json.loads((out / "report.json").read_text())["sources"]
    assert report["books"]["documents_in"] == 4 and report["github"]["documents_out"] == 2


def test_slurm_job_scripts_carry_tasks_dependencies_and_commands(tmp_path):
    from training.data.pipeline.config import load_data_config
    from training.data.pipeline.executors import ExecutorOptions
    from training.data.pipeline.prepare import prepare_data

    folder = sample_copy(tmp_path, models=False)
    out = tmp_path / "out"
    options = ExecutorOptions(kind="slurm", partition="cpu", dry_run=True, env_command="source /opt/venv/bin/activate")
    result = prepare_data(load_data_config(folder / "sample.yaml"), out, options, tasks=8, sources=["books"])
    jobs = {}
    for script in result["slurm_scripts"]:
        name = re.search(r"#SBATCH --job-name=(\S+)", script["script"]).group(1)
        if "launch_pickled_pipeline" in script["script"]:
            jobs[name] = script
    stages = ["filter", "minhash_signatures", "minhash_buckets", "minhash_cluster", "minhash_filter", "tokenize"]
    assert list(jobs) == [f"paper_sample-books-{s}" for s in stages]  # submitted in dependency order
    tasks = {"filter": 8, "minhash_signatures": 8, "minhash_buckets": 20, "minhash_cluster": 1, "minhash_filter": 8,
             "tokenize": 8}
    previous = None
    for stage in stages:
        job = jobs[f"paper_sample-books-{stage}"]
        text = job["script"]
        assert f"#SBATCH --array=0-{tasks[stage] - 1}\n" in text and "#SBATCH --partition=cpu" in text
        assert "source /opt/venv/bin/activate" in text
        pickled = out / "logs" / "books" / stage / "executor.pik"
        assert f"launch_pickled_pipeline {pickled}" in text and pickled.is_file()
        dependency = [a for a in job["args"] if a.startswith("--dependency=")]
        assert dependency == ([] if previous is None else [f"--dependency=afterok:{previous}"])
        previous = job["job_id"]
    assert not (out / "docs").exists()  # nothing ran
