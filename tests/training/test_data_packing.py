"""PackedStream: BOS/EOS packing without loss or repetition, mixture proportions, determinism, exact resume."""

import json
import random

import numpy as np
import pytest
import sentencepiece as spm
import torch

from training.data import PackedStream, demo_mixture_path, load_mixture

WORDS = {"home": ["house", "garden", "window"], "nature": ["river", "mountain", "forest"],
         "art": ["music", "dance", "song"]}


@pytest.fixture(scope="module")
def sp(fixtures):
    return spm.SentencePieceProcessor(model_file=str(fixtures / "llama-tokenizer" / "tokenizer.model"))


def write_source(path, words, n, seed, max_words=60):
    rng = random.Random(seed)
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(1, max_words))) for _ in range(n)]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return docs


@pytest.fixture()
def three_sources(tmp_path):
    docs = {name: write_source(tmp_path / f"{name}.jsonl", words, 40, seed=i) for i, (name, words) in
            enumerate(WORDS.items())}
    config = {"base_dir": str(tmp_path), "seed": 0, "sources": [
        {"name": "home", "path": "home.jsonl", "weight": 0.6},
        {"name": "nature", "path": "nature.jsonl", "weight": 0.3},
        {"name": "art", "path": "art.jsonl", "weight": 0.1}]}
    return load_mixture(config), docs


def reference_stream(sp, docs):
    """The packed token stream built independently: [BOS] + ids + [EOS] per document, concatenated."""
    return [t for d in docs for t in [sp.bos_id(), *sp.encode(d), sp.eos_id()]]


def test_packing_loses_and_repeats_no_token_across_epochs(tmp_path, sp):
    docs = write_source(tmp_path / "d.jsonl", WORDS["home"], 30, seed=1)
    mix = load_mixture({"base_dir": str(tmp_path), "sources": [{"name": "d", "path": "d.jsonl", "shuffle": False}]})
    stream = PackedStream(mix, sp, seq_len=37, batch_docs=7)
    rows = torch.cat([stream.next_batch(5) for _ in range(20)])  # 3700 tokens: several epochs of ~1200
    assert rows.shape == (100, 37) and rows.dtype == torch.long
    expected = reference_stream(sp, docs) * 4
    assert rows.flatten().tolist() == expected[:3700]
    epoch_tokens = len(reference_stream(sp, docs))
    stats = stream.stats()["d"]
    assert stats["tokens"] == 3700 and stats["documents"] == 3 * 30 + expected[:3700][3 * epoch_tokens:].count(2)
    assert stats["epochs"] == pytest.approx(3700 / epoch_tokens, abs=1 / 30)


def test_epochs_count_the_consumed_part_of_a_long_document(tmp_path, sp):
    """A run that has read half of a source's only document (a book) has done half an epoch, not 0."""
    (tmp_path / "book.txt").write_text(" ".join(["river"] * 400))
    mix = load_mixture({"base_dir": str(tmp_path), "sources": [{"name": "book", "path": "book.txt"}]})
    stream = PackedStream(mix, sp, seq_len=50, batch_docs=1)
    length = len(reference_stream(sp, [(tmp_path / "book.txt").read_text()]))
    stream.next_batch(2)
    assert stream.stats()["book"]["epochs"] == pytest.approx(100 / length)
    stream.next_batch(length // 50)  # past the end: one full epoch, then part of the second
    assert stream.stats()["book"]["epochs"] == pytest.approx(100 / length + (length // 50) * 50 / length)


def test_shuffled_epochs_contain_every_document_exactly_once(tmp_path, sp):
    docs = write_source(tmp_path / "d.jsonl", WORDS["art"], 50, seed=2)
    mix = load_mixture({"base_dir": str(tmp_path), "sources": [{"name": "d", "path": "d.jsonl"}]})
    epoch_tokens = len(reference_stream(sp, docs))
    stream = PackedStream(mix, sp, seq_len=epoch_tokens)  # one row = exactly one epoch
    for _ in range(2):
        row = stream.next_batch(1)[0].tolist()
        assert row[0] == sp.bos_id() and row[-1] == sp.eos_id()
        assert row.count(sp.bos_id()) == row.count(sp.eos_id()) == len(docs)
        pieces, current = [], []
        for token in row:
            current.append(token)
            if token == sp.eos_id():
                pieces.append(tuple(current))
                current = []
        assert sorted(pieces) == sorted(tuple([sp.bos_id(), *sp.encode(d), sp.eos_id()]) for d in docs)
        assert [sp.decode(list(p[1:-1])) for p in pieces] != docs  # shuffled, not the file order
    assert stream.stats()["d"]["epochs"] == 2.0 and stream.stats()["d"]["documents"] == 100


def test_mixture_proportions_within_two_points_over_10k_sequences(three_sources, sp):
    mix, docs = three_sources
    vocab = {name: {t for d in ds for t in sp.encode(d)} for name, ds in docs.items()}
    assert not (vocab["home"] & vocab["nature"]) and not (vocab["home"] & vocab["art"])
    stream = PackedStream(mix, sp, seq_len=8)
    counts = dict.fromkeys(WORDS, 0)
    for _ in range(100):
        batch = stream.next_batch(100)
        for row, reported in zip(batch.tolist(), stream.last_sources):
            content = set(row) - {sp.bos_id(), sp.eos_id()}
            owner = [name for name, ids in vocab.items() if content <= ids]
            assert owner == [reported]  # the row's tokens really come from the source it is attributed to
            counts[reported] += 1
    for name, probability in mix.probabilities.items():
        assert abs(counts[name] / 10_000 - probability) < 0.02, (name, counts)
        assert stream.stats()[name]["tokens"] == 8 * counts[name]


def test_same_seed_same_batches_other_seed_other_batches(three_sources, sp):
    mix, _ = three_sources
    a, b, c = (PackedStream(mix, sp, seq_len=16, seed=s) for s in (0, 0, 1))
    batches = [(a.next_batch(8), b.next_batch(8), c.next_batch(8)) for _ in range(10)]
    assert all(torch.equal(x, y) for x, y, _ in batches)
    assert not all(torch.equal(x, z) for x, _, z in batches)
    assert PackedStream(mix, sp, seq_len=16).seed == mix.seed  # seed=None takes the mixture's


@pytest.mark.parametrize("stop_after", [0, 3, 17])
def test_state_dict_round_trip_resumes_exactly(three_sources, sp, stop_after):
    mix, _ = three_sources
    reference = PackedStream(mix, sp, seq_len=32, batch_docs=5)
    expected = [reference.next_batch(6) for _ in range(stop_after + 12)]  # crosses several epochs
    interrupted = PackedStream(mix, sp, seq_len=32, batch_docs=5)
    for _ in range(stop_after):
        interrupted.next_batch(6)
    state = json.loads(json.dumps(interrupted.state_dict()))  # JSON-serialisable, as in a checkpoint
    assert len(json.dumps(state)) < 1000  # counters, not buffered tokens
    resumed = PackedStream(load_mixture(mix.to_dict() | {"base_dir": str(mix.base_dir)}), sp, seq_len=32,
                           batch_docs=11)  # a fresh process: new readers, another read-ahead size
    resumed.load_state_dict(state)
    for i in range(stop_after, stop_after + 12):
        assert torch.equal(resumed.next_batch(6), expected[i]), i
    assert resumed.stats() == reference.stats()


def test_streaming_datasets_source_resumes_exactly(tmp_path, sp):
    write_source(tmp_path / "a.jsonl", WORDS["home"], 30, seed=5)
    write_source(tmp_path / "b.jsonl", WORDS["art"], 30, seed=6)
    config = {"base_dir": str(tmp_path), "validation_fraction": 0.1, "sources": [
        {"name": "a", "dataset": "json", "data_files": "a.jsonl", "shuffle_buffer": 8, "weight": 2},
        {"name": "b", "dataset": "json", "data_files": "b.jsonl", "shuffle": False}]}
    reference = PackedStream(load_mixture(config), sp, seq_len=24, batch_docs=4)
    expected = [reference.next_batch(4) for _ in range(30)]  # several epochs of both streams
    interrupted = PackedStream(load_mixture(config), sp, seq_len=24, batch_docs=4)
    for _ in range(13):
        interrupted.next_batch(4)
    resumed = PackedStream(load_mixture(config), sp, seq_len=24, batch_docs=4)
    resumed.load_state_dict(json.loads(json.dumps(interrupted.state_dict())))
    assert all(torch.equal(resumed.next_batch(4), expected[i]) for i in range(13, 30))
    stats = resumed.stats()
    assert stats == reference.stats() and stats["a"]["epochs"] > 1 and stats["b"]["epochs"] > 1


def test_load_state_dict_rejects_another_stream(three_sources, sp):
    mix, _ = three_sources
    state = PackedStream(mix, sp, seq_len=32).state_dict()
    with pytest.raises(ValueError, match="seq_len=32.*64"):
        PackedStream(mix, sp, seq_len=64).load_state_dict(state)


def test_validation_split_is_finite_held_out_and_complete(tmp_path, sp):
    docs = write_source(tmp_path / "d.jsonl", WORDS["nature"], 100, seed=3)
    other = write_source(tmp_path / "o.jsonl", WORDS["art"], 50, seed=4)
    mix = load_mixture({"base_dir": str(tmp_path), "validation_fraction": 0.1, "sources": [
        {"name": "d", "path": "d.jsonl"}, {"name": "o", "path": "o.jsonl", "weight": 0}]})
    held_out = [d for i, d in enumerate(docs) if i % 10 == 9]
    for source, ref_docs in (("d", held_out), (None, held_out + [d for i, d in enumerate(other) if i % 10 == 9])):
        val = PackedStream(mix, sp, seq_len=20, split="validation", source=source)
        rows = torch.cat(list(val.iter_batches(3)))
        assert list(val.iter_batches(3)) == []  # one pass only
        if source == "d":
            expected = reference_stream(sp, held_out)
            assert rows.flatten().tolist() == expected[: len(expected) // 20 * 20]  # only the last partial row dropped
        else:
            per_source = [reference_stream(sp, held_out), reference_stream(sp, ref_docs[len(held_out):])]
            assert rows.flatten().tolist() == [t for s in per_source for t in s[: len(s) // 20 * 20]]
    train = PackedStream(mix, sp, seq_len=20)
    assert train.source_names == ["d"]  # weight 0: never sampled for training
    train_text = sp.decode(train.next_batch(200).flatten().tolist())
    assert all(d not in train_text for d in held_out if len(d) > 40)


def test_hugging_face_tokenizer_packs_like_sentencepiece(three_sources, sp, fixtures):
    from modeling_llama import LlamaPaperTokenizerFast

    hf = LlamaPaperTokenizerFast(vocab_file=str(fixtures / "llama-tokenizer" / "tokenizer.model"))
    mix, _ = three_sources
    a, b = PackedStream(mix, sp, seq_len=64), PackedStream(mix, hf, seq_len=64)
    for _ in range(5):
        assert torch.equal(a.next_batch(8), b.next_batch(8))


def test_multi_process_tokenization_gives_the_same_stream(three_sources, sp):
    mix, _ = three_sources
    single, multi = PackedStream(mix, sp, seq_len=64), PackedStream(mix, sp, seq_len=64, num_proc=2)
    try:
        for _ in range(3):
            assert torch.equal(single.next_batch(16), multi.next_batch(16))
    finally:
        multi.close()


def test_tokenizer_without_bos_or_eos_is_rejected(three_sources):
    mix, _ = three_sources

    class NoBos:
        bos_token_id, eos_token_id = None, 2

    with pytest.raises(ValueError, match="no BOS token id"):
        PackedStream(mix, NoBos(), seq_len=8)


def test_demo_corpus_streams_both_sources(sp):
    mix = load_mixture(demo_mixture_path())
    stream = PackedStream(mix, sp, seq_len=256)
    batch = stream.next_batch(64)
    assert batch.shape == (64, 256) and set(stream.last_sources) == {"shakespeare", "alice"}
    assert (batch == sp.bos_id()).sum() >= 1 and int(batch.max()) < sp.get_piece_size()
    stats = stream.stats()
    assert sum(s["tokens"] for s in stats.values()) == 64 * 256
    val = PackedStream(mix, sp, seq_len=256, split="validation", source="alice")
    n_rows = sum(len(b) for b in val.iter_batches(4))
    held_out = sum(len(sp.encode(d)) + 2 for d in mix.reader("alice").iter_documents("validation", 0, 0, 0))
    assert n_rows == held_out // 256 > 0
    assert np.isclose(sum(mix.probabilities.values()), 1)
