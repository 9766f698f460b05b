"""The pre-training job end to end (a shortened main job): it learns (held-out loss far below a unigram model of
the same tokenizer), leaves a complete Hugging Face folder, logs what the issue asks, and handles non-finite losses."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch

import modeling_llama  # noqa: F401  (Auto classes)
from modeling_llama.cli import main as llama_paper
from training import pretrain as pretrain_module
from training.data import PackedStream, demo_mixture_path, load_mixture
from training.optimizer import lr_multiplier
from training.pretrain import NonFiniteLossError, pretrain
from training.run_config import RunConfig

from .pretrain_helpers import final_weights, tiny_run, tiny_tokenizer_dir

STEPS = 160


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A shortened main job: the tiny model, 160 steps, and its own tokenizer trained inside the run."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("pretrain") / "run"
    run = tiny_run(out, tokenizer=None, vocab_size=512, max_steps=STEPS, micro_batch_size=16, learning_rate=1e-2,
                   log_steps=20, tensorboard=True, eval_max_batches=None, sample_tokens=12)
    summary = pretrain(run)
    return run, out, summary


def _unigram_reference(tokenizer, texts, eval_ids: torch.Tensor) -> float:
    """Independent add-one unigram cross-entropy (nats/token) of `eval_ids` given the training texts."""
    counts = Counter()
    for text in texts:
        counts.update(tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
    total, vocab = sum(counts.values()), len(tokenizer)
    return -sum(math.log((counts[int(t)] + 1) / (total + vocab)) for t in eval_ids.tolist()) / eval_ids.numel()


def test_heldout_loss_beats_a_unigram_model_by_a_wide_margin(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, out, summary = trained
    model = AutoModelForCausalLM.from_pretrained(out).eval()  # the saved folder, not the in-memory model
    tokenizer = AutoTokenizer.from_pretrained(out)
    mixture = load_mixture(demo_mixture_path())
    train_texts = list(mixture.iter_texts(split="train"))
    for source in ("shakespeare", "alice"):
        batches = list(PackedStream(mixture, tokenizer, seq_len=run.seq_len, split="validation",
                                    source=source).iter_batches(16))
        ids = torch.cat(batches)
        with torch.no_grad():
            logits = torch.cat([model(input_ids=b).logits for b in batches])
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).item()
        unigram = _unigram_reference(tokenizer, train_texts, ids[:, 1:].flatten())
        assert ids.numel() > 5000, "the held-out set must be large enough to mean something"
        assert loss < unigram - 0.5, f"{source}: model {loss:.3f} vs unigram {unigram:.3f} nats/token"
        reported = summary["heldout"][source]
        assert reported["loss"] == pytest.approx(loss, rel=1e-4)  # what the job reports is what the folder does
        assert reported["unigram_loss"] == pytest.approx(unigram, rel=1e-3)
        assert reported["perplexity"] == pytest.approx(math.exp(loss), rel=1e-3)
        assert 0.5 < reported["bits_per_byte"] < loss / math.log(2)  # every token is at least one byte


def test_final_folder_is_a_complete_hugging_face_checkpoint(trained):
    from transformers import AutoTokenizer

    _, out, summary = trained
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # sharded safetensors
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama_paper" and "AutoModelForCausalLM" in config["auto_map"]
    assert (out / "generation_config.json").is_file()
    assert (out / "tokenizer.model").is_file() and (out / "tokenizer.json").is_file()  # slow and fast tokenizers
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.decode(tokenizer("To be, or not to be")["input_ids"], skip_special_tokens=True) == \
        "To be, or not to be"
    card = (out / "README.md").read_text()
    for expected in ("learning_rate", "0.95", "shakespeare", "alice", "loss_curve.png", "perplexity",
                     f"{summary['tokens_seen']:,}"):
        assert expected in card, expected
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    stats = summary["data_stats"]
    assert sum(s["tokens"] for s in stats.values()) >= summary["tokens_seen"]  # every trained token is counted


def test_tokenizer_trained_inside_the_run_is_deterministic(trained):
    _, out, _ = trained
    # The session tokenizer was trained separately with the same texts, size and seed: byte-identical model.
    assert (out / "tokenizer" / "tokenizer.model").read_bytes() == (tiny_tokenizer_dir() / "tokenizer.model").read_bytes()


def test_metrics_and_run_info(trained):
    run, out, _ = trained
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(20, STEPS + 1, 20))
    for r in records:
        assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu"} <= r.keys()
        assert r["tokens_per_s"] > 0 and r["grad_norm"] > 0 and r["mfu"] is None  # no peak FLOP/s for a CPU
        # the lr of the last update of the window: update index step-1 of the schedule
        assert r["lr"] == pytest.approx(run.learning_rate * lr_multiplier(r["step"] - 1, 8, STEPS))
    assert records[-1]["loss"] < records[0]["loss"] - 1.0
    info = json.loads((out / "run_info.json").read_text())
    assert (info["world_size"], info["distributed_type"], info["zero_stage"]) == (1, "NO", None)
    assert (info["num_nodes"], info["processes_per_node"], info["node_ranks"]) == (1, 1, [0])
    assert info["mesh"] == {"dp_replicate": 1, "dp_shard": 1, "tp": 1} and info["elastic_restart_count"] == 0
    assert info["versions"]["torch"] == torch.__version__.split("+")[0] or info["versions"]["torch"] == torch.__version__


def _break_calls(monkeypatch, broken_calls: tuple[int, ...], breaker) -> list[torch.Tensor]:
    """Make `compute_loss` call number n (1-based) in `broken_calls` return `breaker(loss)`; returns the snapshots
    of the first parameter taken at the start of every call."""
    real = pretrain_module.compute_loss
    snapshots = []

    def broken(model, batch):
        snapshots.append(next(model.parameters()).detach().clone())
        loss = real(model, batch)
        return breaker(loss) if len(snapshots) in broken_calls else loss

    monkeypatch.setattr(pretrain_module, "compute_loss", broken)
    return snapshots


def test_non_finite_loss_skips_the_update_and_stops_after_k_in_a_row(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    snapshots = _break_calls(monkeypatch, (3, 4), lambda loss: loss * float("nan"))
    with pytest.warns(RuntimeWarning, match="non-finite loss; update skipped") as caught:
        pretrain(tiny_run(tmp_path / "a", max_steps=6, log_steps=1, max_nonfinite_steps=3, sample_tokens=0))
    # numbered as metrics.jsonl numbers the steps (calls 3 and 4 are steps 3 and 4)
    assert [str(w.message).split(":")[0] for w in caught if "update skipped" in str(w.message)] == ["step 3", "step 4"]
    assert torch.equal(snapshots[2], snapshots[4])  # steps 3 and 4 changed nothing
    assert not torch.equal(snapshots[1], snapshots[2]) and not torch.equal(snapshots[4], snapshots[5])
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["grad_norm"] is None for r in records] == [False, False, True, True, False, False]

    _break_calls(monkeypatch, tuple(range(1, 7)), lambda loss: loss * float("inf"))
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteLossError, match="3 optimizer steps in a row"):
        pretrain(tiny_run(tmp_path / "b", max_steps=6, log_steps=1, max_nonfinite_steps=3))


class _NanGradient(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss whose gradients overflow."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def test_non_finite_gradients_of_a_finite_loss_skip_the_update(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    snapshots = _break_calls(monkeypatch, (3,), _NanGradient.apply)
    with pytest.warns(RuntimeWarning, match="non-finite gradient norm"):
        pretrain(tiny_run(tmp_path, max_steps=5, log_steps=1, max_nonfinite_steps=3, sample_tokens=0))
    assert torch.equal(snapshots[2], snapshots[3])  # step 3 left the weights alone instead of writing NaN into them
    assert not torch.equal(snapshots[3], snapshots[4])  # and training went on
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["grad_norm"] is None for r in records] == [False, False, True, False, False]
    assert all(math.isfinite(r["loss"]) for r in records)  # the loss itself was finite and is logged
    for name, tensor in final_weights(tmp_path).items():
        assert torch.isfinite(tensor).all(), name


def test_cli_defaults_to_the_demo_job_and_rejects_bad_keys(capsys):
    from training.pretrain import DEFAULT_PRESET
    demo = RunConfig.from_preset(DEFAULT_PRESET)
    assert demo.tokenizer is None and 1000 <= demo.vocab_size <= 8000  # trains "a few thousand pieces"
    assert llama_paper(["pretrain", "--set", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        llama_paper(["pretrain", "--help"])
    help_text = capsys.readouterr().out
    for flag in ("--preset", "--config", "--max-steps", "--save-steps", "--output-dir", "--resume", "--seed"):
        assert flag in help_text


def test_gradient_accumulation_matches_the_larger_batch(tmp_path):
    torch.set_num_threads(1)
    common = {"max_steps": 4, "log_steps": 1, "sample_tokens": 0, "eval_max_batches": 1}
    pretrain(tiny_run(tmp_path / "big", micro_batch_size=8, **common))
    # 2 micro-batches of 4 are the same 8 sequences (the stream is deterministic): the same update.
    pretrain(tiny_run(tmp_path / "acc", micro_batch_size=4, gradient_accumulation_steps=2, **common))
    big, acc = final_weights(tmp_path / "big"), final_weights(tmp_path / "acc")
    for key in big:  # float round-off only (Adam divides by sqrt(v), which magnifies it for tiny gradients)
        torch.testing.assert_close(acc[key], big[key], rtol=0, atol=5e-5, msg=key)
    records = [[json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
               for d in ("big", "acc")]
    assert [r["loss"] for r in records[0]] == pytest.approx([r["loss"] for r in records[1]], abs=1e-5)
    # Adam is blind to a gradient scale, the norm is not: accumulated gradients are averaged, not summed.
    assert [r["grad_norm"] for r in records[0]] == pytest.approx([r["grad_norm"] for r in records[1]], rel=1e-4)


def test_an_earlier_run_in_output_dir_needs_resume_or_overwrite(tmp_path, capsys):
    from transformers import AutoTokenizer

    from training.checkpointing import list_checkpoints
    torch.set_num_threads(1)
    out = tmp_path / "run"
    common = {"tokenizer": None, "max_steps": 2, "log_steps": 1, "sample_tokens": 0, "eval_max_batches": 1}
    pretrain(tiny_run(out, vocab_size=512, save_steps=2, **common))
    # A fresh run would reuse the old tokenizer and leave checkpoint-2 for a later --resume to pick up.
    with pytest.raises(FileExistsError, match="--resume to continue it, --overwrite"):
        pretrain(tiny_run(out, vocab_size=400, **common))
    assert pretrain_module.main(["--preset", "tiny", "--output-dir", str(out)]) == 2  # what a launcher runs
    assert "already holds an earlier run" in capsys.readouterr().err
    with pytest.raises(ValueError, match="only one"):
        pretrain(tiny_run(out, **common), resume="latest", overwrite=True)

    pretrain(tiny_run(out, vocab_size=400, save_steps=0, **{**common, "max_steps": 1}), overwrite=True)
    assert list_checkpoints(out) == []  # the earlier run's checkpoints are gone
    assert len(AutoTokenizer.from_pretrained(out / "tokenizer")) == 400  # a tokenizer of this run's size
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 400
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]


def test_module_entry_point_reports_bad_input_in_one_line(tmp_path, capsys):
    # `accelerate launch -m training.pretrain` runs main(): one line per process, like `llama-paper pretrain`.
    code = pretrain_module.main(["--preset", "tiny", "--mixture", str(tmp_path / "none.yaml"),
                                 "--output-dir", str(tmp_path / "out")])
    assert code == 2
    assert "is neither 'demo', 'paper' nor an existing mixture file" in capsys.readouterr().err


def test_tokenizer_workers_tokenize_the_training_stream_in_processes_with_the_same_result(tmp_path, monkeypatch):
    import training.data

    from .pretrain_helpers import assert_same_weights, final_weights
    torch.set_num_threads(1)
    built = []

    class Recorded(PackedStream):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(training.data, "PackedStream", Recorded)
    common = {"max_steps": 2, "log_steps": 1, "sample_tokens": 0, "eval_max_batches": 1}
    pretrain(tiny_run(tmp_path / "one", **common))
    pretrain(tiny_run(tmp_path / "two", tokenizer_workers=2, **common))
    assert [s.encoder.num_proc for s in built if s.split == "train"] == [1, 2]
    assert_same_weights(final_weights(tmp_path / "two"), final_weights(tmp_path / "one"))


def test_report_handles_a_stream_still_in_its_first_pass():
    # A streamed source's epochs are None until its first pass ends (the paper mixture's sources): the end-of-run
    # report used to crash formatting None, after the folder was written and while other ranks waited at a barrier.
    lines = []
    summary = {"parameters": 10, "steps": 2, "tokens_seen": 64, "wall_time_s": 1.0, "sample": "x",
               "heldout": {"web": {"loss": None}},
               "data_stats": {"web": {"tokens": 64, "epochs": None}, "books": {"tokens": 32, "epochs": 0.5},
                              "wiki": {"tokens": 16, "epochs": 0.25, "epochs_estimated": True}}}
    pretrain_module.report(summary, lines.append)
    assert "  data web: 64 tokens, epochs unknown (stream still in its first pass)" in lines
    assert "  data books: 32 tokens, 0.50 epochs" in lines
    assert "  data wiki: 16 tokens, ~0.25 epochs (from the size the dataset declares)" in lines


def test_a_tokenizer_trained_in_the_run_reads_a_bounded_sample_of_an_endless_mixture(tmp_path):
    # The paper presets train their tokenizer on a streamed web-scale mixture: reading it whole before step 0
    # would never end (and time out the other ranks waiting at the barrier).
    from itertools import cycle

    from accelerate import Accelerator
    demo = list(load_mixture(demo_mixture_path()).iter_texts(split="train"))
    read = []

    class Endless:
        def iter_texts(self, split="train"):
            for text in cycle(demo):
                read.append(split)
                if len(read) > 10 * 400:  # fail instead of hanging when the cap is ignored
                    raise AssertionError("the tokenizer kept reading past tokenizer_max_documents")
                yield text

    run = RunConfig.from_dict({"vocab_size": 512, "tokenizer_max_documents": 400})
    tokenizer, folder = pretrain_module.prepare_tokenizer(run, Endless(), tmp_path, Accelerator(cpu=True))
    assert len(read) == 400 and set(read) == {"train"}  # exactly the cap, from the training split only
    assert len(tokenizer) == 512 and folder == tmp_path / "tokenizer"


def test_initial_weights_come_from_the_seed_alone_as_under_zero_init():
    # Under ZeRO-3 (deepspeed.zero.Init) torch's default inits are skipped and rank 0 draws every weight from the
    # seed in module order; a single process must draw the very same weights, or ZeRO-3 and DDP runs start apart.
    from transformers import AutoTokenizer
    from transformers.initialization import no_init_weights

    from modeling_llama import LlamaPaperForCausalLM
    run = RunConfig.from_dict({"model_preset": "tiny", "seed": 3})
    model = pretrain_module.build_model(run, AutoTokenizer.from_pretrained(tiny_tokenizer_dir()))
    torch.manual_seed(run.seed)
    with no_init_weights():  # what zero.Init's construction skips
        reference = LlamaPaperForCausalLM(model.config)
    torch.manual_seed(run.seed)
    reference.initialize_weights()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    q = model.model.layers[0].self_attn.q_proj.weight
    assert abs(q.std().item() - model.config.initializer_range) < 2e-3  # N(0, 0.02), not torch's kaiming default


def test_a_missing_tokenizer_folder_is_a_one_line_error(tmp_path, capsys):
    # It used to surface transformers' "Repo id must be in the form 'repo_name'..." traceback.
    assert llama_paper(["pretrain", "--preset", "tiny", "--output-dir", str(tmp_path / "run"),
                        "--tokenizer", str(tmp_path / "no-tokenizer")]) == 2
    assert f"tokenizer {tmp_path / 'no-tokenizer'}: no saved tokenizer there" in capsys.readouterr().err


def test_fsdp_rank0_loading_leaves_other_ranks_an_uninitialised_model_with_real_buffers(monkeypatch):
    # With fsdp_cpu_ram_efficient_loading only rank 0 initialises weights; Accelerate broadcasts them into the shards.
    # The other ranks' parameters must be real CPU storage (Accelerate maps optimizer parameters by storage pointer)
    # and their rotary buffers real values (non-persistent buffers are not broadcast).
    from transformers import AutoTokenizer

    from modeling_llama import LlamaPaperForCausalLM
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "true")
    run = RunConfig.from_dict({"model_preset": "tiny", "seed": 3})
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir())
    rank0 = pretrain_module.build_model(run, tokenizer, rank=0)

    def no_init(*args, **kwargs):
        raise AssertionError("a rank other than 0 initialised weights")
    monkeypatch.setattr(LlamaPaperForCausalLM, "initialize_weights", no_init)
    monkeypatch.setattr(LlamaPaperForCausalLM, "_init_weights", no_init)
    other = pretrain_module.build_model(run, tokenizer, rank=1)
    params = dict(other.named_parameters())
    assert params.keys() == dict(rank0.named_parameters()).keys()
    assert all(p.device.type == "cpu" and p.shape == rank0.get_parameter(n).shape for n, p in params.items())
    assert len({p.data_ptr() for p in params.values()}) == len(params)  # distinct storage, none at 0
    buffers = dict(other.named_buffers())
    assert buffers.keys() and all(torch.equal(b, rank0.get_buffer(n)) for n, b in buffers.items())
    assert other.config._attn_implementation == rank0.config._attn_implementation
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")  # without it every rank builds the model itself
    with pytest.raises(AssertionError, match="initialised weights"):
        pretrain_module.build_model(run, tokenizer, rank=1)
