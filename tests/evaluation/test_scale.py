"""Evaluation at scale: data parallel (2 processes, 2 "nodes" on 127.0.0.1), the request cache (SIGKILL and rerun,
model isolation, sampled generations), a forced CPU+disk device map and tensor parallelism under a launcher, each
against the single-process run of the same command.

One log-likelihood task (piqa) and one generation task (nq_open, greedy); batch size 2 so that every task has
several batches to share out. Subprocesses run one torch thread, as the in-process reference does.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.distributed import KILL_AFTER_ENV, assign
from modeling_llama.cli import main

from .conftest import EVAL_DATA, build_model, build_tokenizer

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--tasks", "piqa,nq_open", "--limit", "3", "--data-dir", str(EVAL_DATA), "--batch-size", "2", "--no-progress"]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}
    env.pop("WORLD_SIZE", None)
    return env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read(folder: Path) -> tuple[dict, list[dict]]:
    report = json.loads((folder / "results.json").read_text())
    return report, [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]


def _outputs(folder: Path) -> list[str]:
    folder.mkdir(exist_ok=True)
    return ["--output", str(folder / "results.json"), "--log-samples", str(folder / "samples.jsonl")]


def _assert_same_results(report: dict, samples: list[dict], ref_report: dict, ref_samples: list[dict]) -> None:
    # samples.jsonl has no timing fields: it must be identical; results differ only in timings and throughput.
    assert samples == ref_samples
    for task, ref in ref_report["results"].items():
        assert report["results"][task]["metrics"] == ref["metrics"] and report["results"][task]["n"] == ref["n"]


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    """The single-process run: results.json and samples.jsonl."""
    out = tmp_path_factory.mktemp("reference")
    assert main(["eval", "--model", str(tiny_model_dir), *FLAGS, *_outputs(out)]) == 0
    return _read(out)


def test_assign_balances_costs_longest_first():
    assert assign([5, 1, 4, 2, 3], 2) == [0, 0, 1, 0, 1]  # 5,4 -> r0,r1; 3 -> r1; 2 -> r0; 1 -> r0 (tie): 8 and 7
    assert assign([3, 3, 3], 1) == [0, 0, 0]


def test_two_processes_equal_one(tiny_model_dir, reference, tmp_path):
    # llama-paper eval --num-processes 2 launches `accelerate launch -m evaluation` (torchrun, gloo on CPU).
    cache = tmp_path / "cache"
    code = subprocess.run([sys.executable, "-m", "evaluation", "--model", str(tiny_model_dir), *FLAGS,
                           "--num-processes", "2", "--cache", str(cache), *_outputs(tmp_path)],
                          env=_env(), cwd=ROOT).returncode
    assert code == 0
    report, samples = _read(tmp_path)
    assert report["config"]["num_processes"] == 2
    _assert_same_results(report, samples, *reference)
    assert report["results"]["piqa"]["throughput"]["computed_requests"] == 6  # 3 documents x 2 choices, once each
    with sqlite3.connect(cache / "requests.sqlite") as db:  # both processes wrote their shares to one cache
        assert db.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == report["cache"]["requests"] == 9


def test_two_nodes_equal_one(tiny_model_dir, reference, tmp_path):
    # Two launchers ("nodes") of one process each, static rendezvous on 127.0.0.1: both have LOCAL_RANK 0, so
    # only the global rank decides who computes what and who writes.
    port = _port()
    procs = [subprocess.Popen([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2",
                               "--machine_rank", str(r), "--num_processes", "2", "--main_process_ip", "127.0.0.1",
                               "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
                               "-m", "evaluation", "--model", str(tiny_model_dir), *FLAGS,
                               *_outputs(tmp_path / f"node{r}")], env=_env(), cwd=ROOT) for r in (0, 1)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    assert not (tmp_path / "node1" / "results.json").exists()  # global rank 1 writes nothing
    report, samples = _read(tmp_path / "node0")
    assert report["config"]["num_processes"] == 2
    _assert_same_results(report, samples, *reference)


def test_killed_run_resumes_from_the_cache(tiny_model_dir, reference, tmp_path):
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "evaluation", "--model", str(tiny_model_dir), *FLAGS, "--cache", str(cache),
           *_outputs(tmp_path / "run")]
    # Killed (SIGKILL, by the documented test hook) once it has committed 7 requests: piqa's 6 and nq_open's first
    # batch of 2 prompts are in the cache, nq_open's last prompt is not, and nothing was written.
    killed = subprocess.run(cmd, env=_env(**{KILL_AFTER_ENV: "7"}), cwd=ROOT)
    assert killed.returncode == -9 and not (tmp_path / "run" / "results.json").exists()
    with sqlite3.connect(cache / "requests.sqlite") as db:
        stored = db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    assert stored == 8
    rerun = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    report, samples = _read(tmp_path / "run")
    _assert_same_results(report, samples, *reference)
    assert report["cache"]["cached_requests"] == 8 and report["cache"]["requests"] == 9
    assert report["results"]["nq_open"]["throughput"]["computed_requests"] == 1
    assert f"8 of 9 requests read from the cache {cache}" in rerun.stdout


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("other-llama")
    build_model(seed=1).save_pretrained(out)
    build_tokenizer().save_pretrained(out)
    return out


def test_cache_never_mixes_models(tiny_model_dir, other_model_dir, reference, tmp_path):
    flags = ["--tasks", "piqa", "--limit", "3", "--data-dir", str(EVAL_DATA), "--batch-size", "2", "--no-progress",
             "--cache", str(tmp_path / "cache")]
    assert main(["eval", "--model", str(tiny_model_dir), *flags, *_outputs(tmp_path / "a")]) == 0
    assert main(["eval", "--model", str(other_model_dir), *flags, *_outputs(tmp_path / "b")]) == 0
    assert main(["eval", "--model", str(other_model_dir), *flags[:-2], *_outputs(tmp_path / "b0")]) == 0
    assert main(["eval", "--model", str(tiny_model_dir), *flags, *_outputs(tmp_path / "a2")]) == 0
    (first, _), (second, second_samples), (_, uncached) = (_read(tmp_path / d) for d in ("a", "b", "b0"))
    assert first["cache"]["cached_requests"] == 0 and second["cache"]["cached_requests"] == 0
    assert second_samples == uncached  # the second model's own scores, not the first's
    assert second_samples != reference[1][:3]
    again, again_samples = _read(tmp_path / "a2")
    assert again["cache"]["cached_requests"] == again["cache"]["requests"] == 6
    assert again_samples == reference[1][:3]


def test_sampled_generations_are_cached_by_seed_and_index(adapter, tmp_path):
    from evaluation.model_adapter import CausalLMAdapter

    ad = CausalLMAdapter(adapter.model, adapter.tokenizer, batch_size=4, progress=False)
    ad.source = None  # fingerprint from the weights in memory
    ad.enable_cache(str(tmp_path / "cache"), "paper")
    kw = {"until": ["\n"], "max_gen_toks": 6, "do_sample": True, "temperature": 1.0, "n": 3}
    requests = [("Q: What is the capital of France?\nA:", kw), ("Q: Who wrote Hamlet?\nA:", kw)]
    first = ad.generate_until(requests)
    assert ad.meter.stats.computed_requests == 6 and len(set(first[0])) > 1  # 3 different samples
    again = ad.generate_until(requests)
    assert again == first and ad.meter.stats.cached_requests == 6
    ad.seed = 99  # another seed draws (and computes) other samples
    other = ad.generate_until(requests)
    assert other != first and ad.meter.stats.computed_requests == 12
    fresh = CausalLMAdapter(adapter.model, adapter.tokenizer, batch_size=4, progress=False)
    assert fresh.generate_until(requests) == first  # the batch's seed comes from its content, not the RNG state


def test_device_map_with_disk_offload_gives_single_device_numbers(tiny_model_dir, reference, tmp_path):
    from evaluation.model_adapter import CausalLMAdapter
    from evaluation.runner import evaluate_task

    # Room for the embedding and one vocabulary-sized layer in "CPU memory": the rest is offloaded to disk.
    table = 32000 * 64 * 4
    ad = CausalLMAdapter.from_pretrained(str(tiny_model_dir), batch_size=2, progress=False, device_map="auto",
                                         max_memory={"cpu": 2 * table + 100_000}, offload_folder=str(tmp_path))
    assert set(ad.placement()["device_map"].values()) == {"cpu", "disk"}
    _, samples = evaluate_task(ad, "piqa", limit=3, data_dir=str(EVAL_DATA))
    samples = json.loads(json.dumps(samples))
    ref = [s for s in reference[1] if s["task"] == "piqa"]
    assert samples == ref


def test_tensor_parallel_two_processes_gives_single_device_numbers(tiny_model_dir, reference, tmp_path):
    flags = ["--tasks", "piqa", "--limit", "3", "--data-dir", str(EVAL_DATA), "--batch-size", "2", "--no-progress"]
    code = subprocess.run([sys.executable, "-m", "evaluation", "--model", str(tiny_model_dir), *flags,
                           "--tensor-parallel", "2", *_outputs(tmp_path)], env=_env(), cwd=ROOT).returncode
    assert code == 0
    report, samples = _read(tmp_path)
    assert report["config"]["placement"]["sharded_parameters"] > 0 and report["config"]["num_processes"] == 2
    ref = [s for s in reference[1] if s["task"] == "piqa"]
    for got, want in zip(samples, ref, strict=True):  # sharded matmuls add in another order: ~1e-7 relative
        assert got["loglikelihoods"] == pytest.approx(want["loglikelihoods"], rel=1e-5)
        assert got["prediction"] == want["prediction"] and got["metrics"] == want["metrics"]


def test_programs_are_shared_out_over_ranks(monkeypatch):
    from evaluation import runner
    from evaluation.distributed import RunStats, World

    parts: dict[int, tuple] = {}

    class TwoRanks(World):  # the exchange of two processes, simulated in one: rank 1 runs first, then rank 0
        def all_gather(self, obj):
            parts[self.rank] = obj
            return [parts.get(r, ({}, RunStats())) for r in range(self.size)]

    executed: list[str] = []
    real = runner.run_program
    monkeypatch.setattr(runner, "run_program", lambda text, timeout: executed.append(text) or real(text, timeout=timeout))
    programs = {(i, "c"): f"assert {i} % 3 != 0" for i in range(5)}
    runner._run_programs(TwoRanks(rank=1, size=2), programs, timeout=10)
    on_rank1 = len(executed)
    verdicts = runner._run_programs(TwoRanks(rank=0, size=2), programs, timeout=10)
    assert 0 < on_rank1 < 5 and len(executed) == 5  # each program ran once, on one rank
    assert verdicts == {(i, "c"): i % 3 != 0 for i in range(5)}


def test_bad_scale_flags_are_clear_errors(tiny_model_dir, tmp_path, capsys):
    from evaluation.cli import parse_max_memory

    assert parse_max_memory("0=20GiB, cpu=60GiB") == {0: "20GiB", "cpu": "60GiB"}
    base = ["eval", "--model", str(tiny_model_dir), "--tasks", "piqa", "--data-dir", str(EVAL_DATA), "--limit", "1",
            "--no-progress", "--output", str(tmp_path / "r.json")]
    assert main([*base, "--max-memory", "20GiB"]) == 2
    assert "expected DEVICE=SIZE" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main([*base, "--cache", str(tmp_path / "file")]) == 2
    assert "is a file; pass a folder" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
