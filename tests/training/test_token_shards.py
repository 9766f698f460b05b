"""Training from token shards: the loader reads the shards' exact tokens, each rank only its own rows (disjoint,
together the single-process batch), deterministically, and a 2-process run resumed from a checkpoint ends with the
uninterrupted run's weights."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

pytest.importorskip("datatrove")

from .pretrain_helpers import REPO, assert_same_weights, final_weights, subprocess_env, tiny_run, tiny_tokenizer_dir

STEPS = 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The demo mixture's training split tokenized by the pipeline (2 tasks), and a mixture naming the shards."""
    from training.data import demo_mixture_path, load_mixture
    from training.data.pipeline.mixture_shards import prepare_mixture_shards

    folder = tmp_path_factory.mktemp("shards")
    mixture = load_mixture(demo_mixture_path())
    prepare_mixture_shards(mixture, tiny_tokenizer_dir(), folder / "data", tasks=2)
    entries = [{**s.to_dict(), "path": str((mixture.base_dir / s.path).resolve()),
                "tokens": str(folder / "data" / "tokens" / s.name)} for s in mixture.sources]
    path = folder / "mixture.yaml"
    path.write_text(yaml.safe_dump({"name": "demo_shards", "seed": 0, "validation_fraction": 0.05,
                                    "sources": entries}))
    return folder, path


def stream(folder, rank=0, world=1, seq_len=64, seed=0):
    from training.data.token_shards import TokenShardStream

    tokens = folder / "data" / "tokens"
    return TokenShardStream({"shakespeare": (tokens / "shakespeare", 0.885), "alice": (tokens / "alice", 0.115)},
                            seq_len, seed=seed, rank=rank, world_size=world)


def test_rows_are_the_documents_sentencepiece_ids(shards):
    import sentencepiece as spm

    folder, _ = shards
    sp = spm.SentencePieceProcessor(model_file=str(tiny_tokenizer_dir() / "tokenizer.model"))
    docs = [json.loads(line)["text"] for path in sorted((folder / "data" / "docs" / "alice").glob("*.gz"))
            for line in __import__("gzip").open(path, "rt")]
    expected = np.concatenate([[sp.bos_id(), *ids, sp.eos_id()] for ids in sp.encode(docs)])
    s = stream(folder, seq_len=64)
    for _ in range(5):
        batch = s.next_batch(8)
        for row, (name, _epoch, window) in zip(batch.numpy(), s.last_rows):
            if name == "alice":  # the stream's window w of alice is tokens [64w, 64w + 64) of its documents
                assert row.tolist() == expected[window * 64:(window + 1) * 64].tolist()
    assert any(name == "alice" for name, _, _ in s.last_rows) or s.draws["alice"] > 0


def test_ranks_read_disjoint_rows_that_make_up_the_single_process_batch(shards):
    folder, _ = shards
    single, ranks = stream(folder), [stream(folder, rank=r, world=2) for r in range(2)]
    for _ in range(20):
        whole = single.next_batch(8)
        parts = [s.next_batch(4) for s in ranks]
        assert not set(ranks[0].last_rows) & set(ranks[1].last_rows)
        assert ranks[0].last_rows + ranks[1].last_rows == single.last_rows
        assert np.array_equal(np.concatenate([p.numpy() for p in parts]), whole.numpy())
    assert ranks[0].state_dict() == ranks[1].state_dict() == single.state_dict()
    epochs = {e for _, e, _ in single.last_rows}
    assert single.stats()["alice"]["epochs"] > 0 and epochs  # sampled from both sources over 20 batches


def test_state_restores_the_same_next_batches_and_other_seeds_differ(shards):
    folder, _ = shards
    a = stream(folder)
    for _ in range(7):
        a.next_batch(8)
    state = json.loads(json.dumps(a.state_dict()))
    b = stream(folder)
    b.load_state_dict(state)
    for _ in range(5):
        assert np.array_equal(a.next_batch(8).numpy(), b.next_batch(8).numpy())
    assert not np.array_equal(stream(folder, seed=1).next_batch(8).numpy(), stream(folder).next_batch(8).numpy())
    with pytest.raises(ValueError, match="seq_len"):
        stream(folder, seq_len=32).load_state_dict(state)


def _launch(run_file, out, *args, rows_dir=None):
    env = subprocess_env()
    if rows_dir is not None:
        env["ROWS_DIR"] = str(rows_dir)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "training" / "configs" / "cpu-ddp.yaml"), str(REPO / "tests" / "training" /
                                                                   "launch_recording_rows.py"),
               "--config", str(run_file), "--output-dir", str(out), *args]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout + result.stderr


def test_two_process_training_reads_disjoint_rows_and_resumes_exactly(shards, tmp_path):
    folder, mixture = shards
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(tiny_run(tmp_path / "out", mixture=str(mixture), max_steps=STEPS,
                                                micro_batch_size=2, log_steps=1, save_steps=STEPS // 2,
                                                sample_tokens=0).to_dict()))
    rows = tmp_path / "rows"
    rows.mkdir()
    _launch(run_file, tmp_path / "out", rows_dir=rows)
    logs = [[json.loads(line) for line in (rows / f"rank{r}.jsonl").read_text().splitlines()] for r in range(2)]
    assert len(logs[0]) == len(logs[1]) >= STEPS
    single = stream(folder, seq_len=tiny_run(tmp_path).seq_len)
    for rank0, rank1 in zip(*logs, strict=True):
        mine = [tuple(r) for r in rank0["rows"]], [tuple(r) for r in rank1["rows"]]
        assert not set(mine[0]) & set(mine[1])  # each rank read only its own rows
        single.next_batch(4)
        assert mine[0] + mine[1] == single.last_rows  # together: the global batch a single process draws
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(tmp_path / "out" / f"checkpoint-{STEPS // 2}", resumed / f"checkpoint-{STEPS // 2}")
    resumed_rows = tmp_path / "resumed_rows"
    resumed_rows.mkdir()
    output = _launch(run_file, resumed, "--resume", rows_dir=resumed_rows)
    assert f"at step {STEPS // 2}" in output
    for r in range(2):  # the resumed run reads the very rows the uninterrupted run read after the checkpoint
        after = [json.loads(line) for line in (resumed_rows / f"rank{r}.jsonl").read_text().splitlines()]
        assert after == logs[r][len(logs[r]) - len(after):] and len(after) == len(logs[r]) // 2
    assert_same_weights(final_weights(resumed), final_weights(tmp_path / "out"))
