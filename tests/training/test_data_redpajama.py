"""The paper's mixture over RedPajama's own files: grouping of urls.txt / a local copy, and a mixture that loads."""

import gzip
import json

import pytest
import yaml

from modeling_llama.cli import main as llama_paper
from training.data import load_mixture, paper_mixture_path
from training.data.redpajama import redpajama_mixture

BASE = "https://data.together.xyz/redpajama-data-1T/v1.0.0"
# One or two files per source, named as in RedPajama's urls.txt (common_crawl has one folder per dump).
FILES = {
    "arxiv": ["arxiv/arxiv_0a1b.jsonl", "arxiv/arxiv_ff02.jsonl"],
    "book": ["book/book.jsonl"],
    "c4": ["c4/c4-train.00000-of-01024.jsonl", "c4/c4-train.00001-of-01024.jsonl"],
    "common_crawl": ["common_crawl/2019-30/en_head_0000.jsonl", "common_crawl/2023-06/en_middle_0001.jsonl.gz"],
    "github": ["github/filtered_0a.sampled.jsonl"],
    "stackexchange": ["stackexchange/stackexchange.jsonl"],
    "wikipedia": ["wikipedia/wiki.jsonl"],
}


def paper_sources() -> dict[str, dict]:
    return {s["config"]: s for s in yaml.safe_load(paper_mixture_path().read_text())["sources"]}


def test_urls_txt_is_grouped_by_source_folder_with_the_paper_weights(tmp_path):
    urls = tmp_path / "urls.txt"
    lines = ["# RedPajama-Data-1T", ""] + [f"{BASE}/{f}" for files in FILES.values() for f in files]
    urls.write_text("\n".join(lines + [f"{BASE}/README.md"]) + "\n")  # a file outside every source is left out
    mixture = yaml.safe_load(redpajama_mixture(urls, tmp_path / "mix.yaml").read_text())
    paper = paper_sources()
    assert len(mixture["sources"]) == len(paper)
    for source in mixture["sources"]:
        folder = next(k for k, v in paper.items() if v["name"] == source["name"])
        assert source["data_files"] == [f"{BASE}/{f}" for f in FILES[folder]]
        assert source["dataset"] == "json" and "config" not in source and source["streaming"] is True
        assert source["weight"] == paper[folder]["weight"] and source["cleaners"] == paper[folder]["cleaners"]


def test_a_local_copy_becomes_a_mixture_that_reads_each_source_from_its_own_files(tmp_path):
    root = tmp_path / "redpajama"
    for folder, files in FILES.items():
        for name in files:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            records = "".join(json.dumps({"text": f"{folder} document {i} from {path.name}", "meta": {}}) + "\n"
                              for i in range(4))
            path.write_bytes(gzip.compress(records.encode()) if name.endswith(".gz") else records.encode())
    (root / "urls.txt").write_text("not data\n")  # other files in the copy are ignored
    mix = load_mixture(redpajama_mixture(root, tmp_path / "local.yaml"))
    paper = paper_sources()
    weights = {s["name"]: s["weight"] for s in paper.values()}
    assert mix.probabilities == pytest.approx({name: w / sum(weights.values()) for name, w in weights.items()})
    for folder, source in paper.items():
        documents = list(mix.reader(source["name"]).iter_documents("train", 0, 0, seed=0))
        assert len(documents) == 4 * len(FILES[folder])  # the gzip-compressed dump included
        assert all(doc.startswith(f"{folder} document") for doc in documents)


def test_bad_listings_are_clear_errors(tmp_path, capsys):
    urls = tmp_path / "urls.txt"
    urls.write_text("\n".join(f"{BASE}/{f}" for k, files in FILES.items() if k != "book" for f in files))
    with pytest.raises(ValueError, match=r"no files for book/ .*complete urls.txt"):
        redpajama_mixture(urls, tmp_path / "mix.yaml")
    assert not (tmp_path / "mix.yaml").exists()
    with pytest.raises(FileNotFoundError, match="urls.txt"):
        redpajama_mixture(tmp_path / "missing.txt", tmp_path / "mix.yaml")
    urls.write_text("\n".join(f"{BASE}/{f}" for files in FILES.values() for f in files))
    assert llama_paper(["redpajama-mixture", str(urls), "--output", str(tmp_path / "mix.yaml")]) == 0
    assert "stackexchange:     1 files" in capsys.readouterr().out
    assert llama_paper(["redpajama-mixture", str(urls), "--output", str(tmp_path / "mix.yaml")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert llama_paper(["redpajama-mixture", str(urls), "--output", str(tmp_path / "mix.yaml"), "--overwrite"]) == 0
