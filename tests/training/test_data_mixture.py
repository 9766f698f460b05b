"""Mixture configs and sources: loading, validation errors, local formats, the held-out split, shipped mixtures."""

import json
from fractions import Fraction

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from training.data import (MixtureConfig, PackedStream, SourceConfig, demo_mixture_path, load_mixture,
                           paper_mixture_path)
from training.data.sources import is_validation, split_documents


def write_jsonl(path, texts, field="text"):
    path.write_text("".join(json.dumps({field: t, "id": i}) + "\n" for i, t in enumerate(texts)))
    return path


@pytest.fixture(scope="module")
def sp(fixtures):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(fixtures / "llama-tokenizer" / "tokenizer.model"))


def test_load_mixture_from_yaml_json_and_dict_resolves_paths_against_the_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "a.jsonl", ["one", "two"])
    config = {"seed": 3, "validation_fraction": 0.0,
              "sources": [{"name": "a", "path": "data/a.jsonl", "weight": 3}, {"name": "b", "path": "data/*.jsonl"}]}
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "mix.json").write_text(json.dumps(config))
    for path in (tmp_path / "mix.yaml", tmp_path / "mix.json"):
        mix = load_mixture(path)
        assert mix.name == "mix" and mix.seed == 3
        assert mix.probabilities == {"a": 0.75, "b": 0.25}
        assert list(mix.iter_texts()) != [] and mix.reader("a").num_documents("train") == 2
    from_dict = load_mixture({**config, "base_dir": str(tmp_path)})
    assert from_dict.sources == load_mixture(tmp_path / "mix.yaml").sources
    assert load_mixture(from_dict) is from_dict


@pytest.mark.parametrize("change, message", [
    ({"sources": []}, "at least one source"),
    ({"colour": "red"}, "unknown key"),
    ({"sources": [{"name": "a", "path": "x.txt", "wieght": 1}]}, "unknown key.*wieght"),
    ({"sources": [{"name": "a"}]}, "exactly one of `path`.*`dataset`"),
    ({"sources": [{"name": "a", "path": "x.txt", "dataset": "y"}]}, "exactly one of"),
    ({"sources": [{"name": "a", "path": "x.txt", "weight": -1}]}, "weight"),
    ({"sources": [{"name": "a", "path": "x.txt", "cleaners": ["bleach"]}]}, "Unknown cleaner 'bleach'"),
    ({"sources": [{"name": "a", "path": "x.txt"}, {"name": "a", "path": "y.txt"}]}, "unique"),
    ({"sources": [{"name": "a", "path": "x.txt", "weight": 0}]}, "positive `weight`"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"sources": [{"name": "a", "path": "x.jsonl", "streaming": True}]}, "dataset: json.*data_files"),
    ({"sources": [{"name": "a", "dataset": "x", "documents": "paragraphs"}]}, "local `path` sources only"),
])
def test_bad_configs_raise_clear_errors(change, message):
    config = {"sources": [{"name": "a", "path": "x.txt"}], **change}
    with pytest.raises(ValueError, match=message):
        load_mixture(config)


def test_missing_files_and_fields_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a file nor a shipped mixture"):
        load_mixture(tmp_path / "absent.yaml")
    with pytest.raises(FileNotFoundError, match="nothing matches 'nowhere/\\*.txt'"):
        load_mixture({"base_dir": str(tmp_path), "sources": [{"name": "a", "path": "nowhere/*.txt"}]}).reader("a")
    write_jsonl(tmp_path / "a.jsonl", ["x"], field="content")
    mix = load_mixture({"base_dir": str(tmp_path), "sources": [{"name": "a", "path": "a.jsonl"}]})
    with pytest.raises(ValueError, match="no field 'text'.*content.*text_field"):
        mix.reader("a").num_documents("train")


def test_validation_rule_holds_out_exactly_floor_n_f_evenly():
    for n, f in [(100, "0.05"), (1000, "0.1"), (37, "1/3"), (10, "0")]:
        held = [i for i in range(n) if is_validation(i, Fraction(f))]
        assert len(held) == int(n * Fraction(f))
        if len(held) > 1:  # evenly spread: consecutive held-out indices are 1/f apart (up to rounding)
            assert max(b - a for a, b in zip(held, held[1:])) <= int(1 / Fraction(f)) + 1


def test_local_formats_globs_and_cleaners(tmp_path):
    write_jsonl(tmp_path / "part1.jsonl", ["<p>alpha</p>", "<p>beta</p>"])
    write_jsonl(tmp_path / "part2.jsonl", ["<p>gamma</p>", "   "])  # the blank record is dropped
    pq.write_table(pa.table({"body": ["delta", None, "epsilon"]}), tmp_path / "t.parquet")
    (tmp_path / "book.txt").write_text("p1 line\n\np2\n\n\np3 is long enough\n")
    mix = load_mixture({"base_dir": str(tmp_path), "sources": [
        {"name": "web", "path": "part*.jsonl", "cleaners": ["html"], "shuffle": False},
        {"name": "table", "path": ["t.parquet"], "text_field": "body", "shuffle": False},
        {"name": "paragraphs", "path": "book.txt", "documents": "paragraphs", "min_chars": 3, "shuffle": False},
        {"name": "whole", "path": str(tmp_path / "book.txt")},  # absolute paths work too
    ]})
    texts = {s.name: list(mix.reader(s.name).iter_documents("train", 0, 0, seed=0)) for s in mix.sources}
    assert texts == {"web": ["alpha\n", "beta\n", "gamma\n"], "table": ["delta", "epsilon"],
                     "paragraphs": ["p1 line", "p2\n\np3 is long enough"],
                     "whole": ["p1 line\n\np2\n\n\np3 is long enough\n"]}
    assert list(mix.reader("web").iter_documents("train", 0, start=2, seed=0)) == ["gamma\n"]  # resume position


def test_split_documents_merges_paragraphs_and_keeps_every_character_of_text():
    text = "a\n\nbb\n\nccc\n \ndddd\n\ne"
    docs = split_documents(text, "paragraphs", min_chars=3)
    assert docs == ["a\n\nbb", "ccc", "dddd", "e"]
    assert split_documents("  \n\n", "paragraphs") == [] and split_documents("", "file") == []


def test_train_and_validation_partition_the_documents_and_shuffle_is_per_epoch(tmp_path):
    docs = [f"document {i}" for i in range(200)]
    write_jsonl(tmp_path / "d.jsonl", docs)
    mix = load_mixture({"base_dir": str(tmp_path), "validation_fraction": 0.1,
                        "sources": [{"name": "d", "path": "d.jsonl"}]})
    reader = mix.reader("d")
    train0 = list(reader.iter_documents("train", 0, 0, seed=0))
    train1 = list(reader.iter_documents("train", 1, 0, seed=0))
    validation = list(reader.iter_documents("validation", 0, 0, seed=0))
    assert len(validation) == 20 and not set(validation) & set(train0)
    assert sorted(train0 + validation) == sorted(docs)
    assert sorted(train0) == sorted(train1) and train0 != train1  # every epoch: all documents, a new order
    assert train0 == list(reader.iter_documents("train", 0, 0, seed=0))  # deterministic
    assert train0 != list(reader.iter_documents("train", 0, 0, seed=1))
    assert validation == [d for i, d in enumerate(docs) if i % 10 == 9]  # natural order, every 10th


def test_datasets_streaming_source_splits_like_a_local_one(tmp_path):
    docs = [f"record number {i}" for i in range(60)]
    write_jsonl(tmp_path / "d.jsonl", docs)
    mix = load_mixture({"base_dir": str(tmp_path), "validation_fraction": 0.2, "sources": [
        {"name": "stream", "dataset": "json", "data_files": "d.jsonl", "shuffle": False},
        {"name": "shuffled", "dataset": "json", "data_files": ["d.jsonl"], "shuffle_buffer": 16},
        {"name": "local", "path": "d.jsonl", "shuffle": False},
    ]})
    stream, local = mix.reader("stream"), mix.reader("local")
    assert stream.num_documents("train") is None  # unknown for a stream
    for split in ("train", "validation"):
        assert list(stream.iter_documents(split, 0, 0, seed=0)) == list(local.iter_documents(split, 0, 0, seed=0))
    assert list(stream.iter_documents("train", 0, 40, seed=0)) == list(local.iter_documents("train", 0, 40, seed=0))
    shuffled = mix.reader("shuffled")
    epoch0 = list(shuffled.iter_documents("train", 0, 0, seed=0))
    assert sorted(epoch0) == sorted(local.iter_documents("train", 0, 0, seed=0)) and epoch0 != sorted(epoch0)
    assert list(shuffled.iter_documents("train", 0, 10, seed=0)) == epoch0[10:]  # resumable after a shuffle


def test_streamed_sources_estimate_epochs_from_the_size_their_dataset_knows(tmp_path, sp):
    """A stream's end-of-run epochs are documents read / the split's size while the first pass is unfinished,
    when the size is known without reading: parquet footers, or `num_examples` in the dataset card (as on the Hub)."""
    docs = [f"record number {i}" for i in range(50)]
    pq.write_table(pa.table({"text": docs}), tmp_path / "d.parquet")
    card = tmp_path / "card"  # a local dataset folder laid out like a Hub dataset: the card gives the split's size
    (card / "data").mkdir(parents=True)
    write_jsonl(card / "data" / "train.jsonl", docs)
    (card / "README.md").write_text("---\ndataset_info:\n  splits:\n  - name: train\n    num_bytes: 1000\n"
                                    "    num_examples: 50\n---\n")
    write_jsonl(tmp_path / "d.jsonl", docs)
    mix = load_mixture({"base_dir": str(tmp_path), "validation_fraction": 0.2, "sources": [
        {"name": "parquet", "dataset": "parquet", "data_files": "d.parquet", "shuffle": False},
        {"name": "card", "dataset": str(card), "shuffle": False},
        {"name": "jsonl", "dataset": "json", "data_files": "d.jsonl", "shuffle": False}]})
    for name in ("parquet", "card"):
        reader = mix.reader(name)
        assert reader.num_documents("train") is None  # still a stream: no exact count without a full pass
        assert (reader.estimated_num_documents("train"), reader.estimated_num_documents("validation")) == (40, 10)
        stream = PackedStream(mix, sp, seq_len=16, source=name, batch_docs=1)
        stream.next_batch(4)  # part of the first epoch: the stream has not told its length yet
        stats = stream.stats()[name]
        assert 0 < stats["documents"] < 40 and stats["epochs_estimated"] is True
        assert stats["epochs"] == pytest.approx(stats["documents"] / 40, abs=1 / 40)  # the head document counts in part
        stream.next_batch(40)  # 640 tokens: more than the 40 documents of the train split
        stats = stream.stats()[name]
        assert stats["epochs"] > 1 and stats["epochs_estimated"] is False  # the first pass counted the length
    jsonl = mix.reader("jsonl")
    assert jsonl.estimated_num_documents("train") is None  # a jsonl's size takes a full read: unknown
    stream = PackedStream(mix, sp, seq_len=16, source="jsonl", batch_docs=1)
    stream.next_batch(4)
    assert stream.stats()["jsonl"]["epochs"] is None and stream.stats()["jsonl"]["epochs_estimated"] is False


def test_iter_texts_yields_every_document_once_interleaved_by_weight(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [f"a{i}" for i in range(300)])
    write_jsonl(tmp_path / "b.jsonl", [f"b{i}" for i in range(100)])
    mix = load_mixture({"base_dir": str(tmp_path), "sources": [
        {"name": "a", "path": "a.jsonl", "weight": 3}, {"name": "b", "path": "b.jsonl", "weight": 1}]})
    texts = list(mix.iter_texts())
    assert sorted(texts) == sorted([f"a{i}" for i in range(300)] + [f"b{i}" for i in range(100)])
    first = texts[:200]
    assert 0.65 < sum(t.startswith("a") for t in first) / len(first) < 0.85  # 3:1 while both last
    assert texts == list(mix.iter_texts()) and texts != list(mix.iter_texts(seed=5))
    epoch0 = list(mix.reader("b").iter_documents("train", 0, 0, seed=mix.seed))
    assert [t for t in texts if t.startswith("b")] == epoch0  # each source in its first epoch's order


def test_demo_mixture_ships_with_the_package_and_is_cleaned():
    mix = load_mixture(demo_mixture_path())
    assert [s.name for s in mix.sources] == ["shakespeare", "alice"]
    assert abs(sum(mix.probabilities.values()) - 1) < 1e-12
    alice = mix.reader("alice")
    text = "\n".join(alice.iter_documents("train", 0, 0, seed=0))
    assert "\ufeff" not in text and "PROJECT GUTENBERG" not in text.upper() and "Down the Rabbit-Hole" in text
    for name in ("shakespeare", "alice"):
        train, validation = mix.reader(name).num_documents("train"), mix.reader(name).num_documents("validation")
        fraction = mix.source(name).validation_fraction or mix.validation_fraction
        assert validation == int((train + validation) * fraction) > 5
    assert load_mixture("demo").sources == mix.sources


def test_paper_mixture_is_table_1_over_redpajama():
    mix = load_mixture(paper_mixture_path())
    assert load_mixture("paper").sources == mix.sources == load_mixture("paper_redpajama").sources
    table_1 = {"common_crawl": 0.67, "c4": 0.15, "github": 0.045, "wikipedia": 0.045, "books": 0.045,
               "arxiv": 0.025, "stackexchange": 0.02}
    assert mix.probabilities == pytest.approx(table_1, abs=1e-12)
    assert {s.dataset for s in mix.sources} == {"togethercomputer/RedPajama-Data-1T"}
    assert sorted(s.config for s in mix.sources) == sorted(
        ["common_crawl", "c4", "github", "wikipedia", "book", "arxiv", "stackexchange"])
    assert mix.source("arxiv").cleaners == ["latex"] and mix.source("github").cleaners == ["code"]
    # HTML removal is Stack Exchange's heuristic (Table 1); RedPajama's Wikipedia is plain text from wikitext, where
    # `html` could only remove text that discusses markup and double-unescape entities
    assert mix.source("stackexchange").cleaners == ["html"] and "html" not in mix.source("wikipedia").cleaners


def test_mixture_round_trips_through_to_dict(tmp_path):
    mix = MixtureConfig(sources=[SourceConfig(name="a", path="a.txt", weight=2, cleaners="gutenberg")], seed=4)
    assert mix.sources[0].cleaners == ["gutenberg"]
    again = load_mixture(json.loads(json.dumps(mix.to_dict())))
    assert again.sources == mix.sources and again.seed == 4
