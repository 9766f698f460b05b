"""convert-meta / export-meta on synthetic Meta checkpoints, checked against Meta's own forward pass."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from modeling_llama import LlamaPaperForCausalLM, LlamaPaperTokenizerFast
from modeling_llama.cli import main as cli_main
from modeling_llama.conversion.convert_meta import convert_meta_checkpoint
from modeling_llama.conversion.export_meta import export_meta_checkpoint

SPLIT = {"wq": 0, "wk": 0, "wv": 0, "w1": 0, "w3": 0, "output": 0, "wo": 1, "w2": 1, "tok_embeddings": 1}
VOCAB = 32000  # the real LLaMA tokenizer in tests/fixtures


# ---- an independent re-implementation of Meta's reference forward (facebookresearch/llama, model.py) ----


def meta_forward(weights: dict[str, torch.Tensor], params: dict, tokens: torch.Tensor) -> torch.Tensor:
    """Logits of Meta's LLaMA: complex-number rotary on interleaved channel pairs, causal attention, SwiGLU."""
    dim, n_heads = params["dim"], params["n_heads"]
    n_kv = params.get("n_kv_heads", n_heads)
    head_dim, eps = dim // n_heads, params["norm_eps"]
    batch, seq = tokens.shape
    freqs = 1.0 / (
        params.get("rope_theta", 10000.0) ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim)
    )
    freqs_cis = torch.polar(torch.ones(seq, head_dim // 2), torch.outer(torch.arange(seq).float(), freqs))

    def rms_norm(x, weight):
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

    def rotate(x):  # (B, S, H, hd): channels (2i, 2i+1) are one complex number
        xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * freqs_cis.view(1, seq, 1, -1)).flatten(3)

    mask = torch.full((seq, seq), float("-inf")).triu(1)
    h = F.embedding(tokens, weights["tok_embeddings.weight"])
    for layer in range(params["n_layers"]):

        def w(name: str, layer: int = layer) -> torch.Tensor:
            return weights[f"layers.{layer}.{name}.weight"]

        x = rms_norm(h, w("attention_norm"))
        q = rotate((x @ w("attention.wq").T).view(batch, seq, n_heads, head_dim))
        k = rotate((x @ w("attention.wk").T).view(batch, seq, n_kv, head_dim))
        v = (x @ w("attention.wv").T).view(batch, seq, n_kv, head_dim)
        k = k.repeat_interleave(n_heads // n_kv, dim=2)
        v = v.repeat_interleave(n_heads // n_kv, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        scores = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(head_dim) + mask, dim=-1)
        h = h + (scores @ v).transpose(1, 2).reshape(batch, seq, dim) @ w("attention.wo").T
        x = rms_norm(h, w("ffn_norm"))
        h = h + (F.silu(x @ w("feed_forward.w1").T) * (x @ w("feed_forward.w3").T)) @ w("feed_forward.w2").T
    output = weights.get("output.weight", weights["tok_embeddings.weight"])
    return rms_norm(h, weights["norm.weight"]) @ output.T


# ---- synthetic checkpoints in Meta's layout ----


def make_meta_checkpoint(
    folder: Path,
    fixtures: Path,
    num_shards: int = 1,
    n_heads: int = 8,
    n_kv_heads: int | None = None,
    tied: bool = False,
    dtype: torch.dtype = torch.float32,
    n_layers: int = 2,
    dim: int = 64,
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Random weights saved as Meta does (consolidated.NN.pth, params.json, tokenizer.model one level up)."""
    gen = torch.Generator().manual_seed(seed)
    params = {
        "dim": dim,
        "multiple_of": 32,
        "n_heads": n_heads,
        "n_layers": n_layers,
        "norm_eps": 1e-6,
        "vocab_size": -1,
    }
    if n_kv_heads:
        params["n_kv_heads"] = n_kv_heads
    kv_dim = (n_kv_heads or n_heads) * (dim // n_heads)
    hidden = 32 * math.ceil(int(2 * 4 * dim / 3) / 32)
    rand = lambda *shape: (torch.randn(*shape, generator=gen) / math.sqrt(shape[-1])).to(dtype)  # noqa: E731
    weights = {"tok_embeddings.weight": torch.randn(VOCAB, dim, generator=gen).to(dtype)}
    for i in range(n_layers):
        weights.update(
            {
                f"layers.{i}.attention.wq.weight": rand(dim, dim),
                f"layers.{i}.attention.wk.weight": rand(kv_dim, dim),
                f"layers.{i}.attention.wv.weight": rand(kv_dim, dim),
                f"layers.{i}.attention.wo.weight": rand(dim, dim),
                f"layers.{i}.feed_forward.w1.weight": rand(hidden, dim),
                f"layers.{i}.feed_forward.w2.weight": rand(dim, hidden),
                f"layers.{i}.feed_forward.w3.weight": rand(hidden, dim),
                f"layers.{i}.attention_norm.weight": (1 + 0.1 * torch.randn(dim, generator=gen)).to(dtype),
                f"layers.{i}.ffn_norm.weight": (1 + 0.1 * torch.randn(dim, generator=gen)).to(dtype),
            }
        )
    weights["norm.weight"] = (1 + 0.1 * torch.randn(dim, generator=gen)).to(dtype)
    if not tied:
        weights["output.weight"] = rand(VOCAB, dim)
    folder.mkdir(parents=True)
    for rank in range(num_shards):
        shard = {}
        for key, tensor in weights.items():
            axis = SPLIT.get(key.split(".")[-2])
            shard[key] = tensor.clone() if axis is None else tensor.chunk(num_shards, axis)[rank].clone()
        shard["rope.freqs"] = (1.0 / 10000.0 ** (torch.arange(0, dim // n_heads, 2).float() / (dim // n_heads))).to(
            dtype
        )
        torch.save(shard, folder / f"consolidated.{rank:02d}.pth")
    (folder / "params.json").write_text(json.dumps(params))
    shutil.copyfile(fixtures / "llama-tokenizer" / "tokenizer.model", folder.parent / "tokenizer.model")
    return weights, params


CASES = [  # (num_shards, n_kv_heads, tied)
    pytest.param(1, None, False, id="1shard-mha"),
    pytest.param(2, 2, False, id="2shards-gqa"),
    pytest.param(4, None, True, id="4shards-mha-tied"),
    pytest.param(4, 4, False, id="4shards-gqa"),
]


@pytest.mark.parametrize("file_reads", [True, False], ids=["file-reads", "mmap-fallback"])
@pytest.mark.parametrize("num_shards,n_kv_heads,tied", CASES)
def test_converted_model_equals_meta_forward(num_shards, n_kv_heads, tied, file_reads, fixtures, tmp_path, monkeypatch):
    monkeypatch.setattr("modeling_llama.conversion.meta_shards.CHUNK_BYTES", 4096)  # tensors stream as many row blocks
    if not file_reads:  # as if byte offsets in the file were unknown: read through the memory map instead
        monkeypatch.setattr("modeling_llama.conversion.meta_shards.file_offsets", lambda path, tensors: None)
    weights, params = make_meta_checkpoint(
        tmp_path / "meta" / "7B", fixtures, num_shards, n_kv_heads=n_kv_heads, tied=tied
    )
    out = convert_meta_checkpoint(tmp_path / "meta" / "7B", tmp_path / "hf", max_shard_size="300KB", progress=False)
    config = json.loads((out / "config.json").read_text())
    assert config["num_key_value_heads"] == (n_kv_heads or 8) and config["tie_word_embeddings"] is tied
    assert config["model_type"] == "llama_paper" and config["intermediate_size"] == 192
    assert (out / "model.safetensors.index.json").is_file()  # 300KB forces several shards
    for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / name).is_file(), name
    model = LlamaPaperForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokens = torch.randint(0, VOCAB, (2, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(tokens).logits
    reference = meta_forward(weights, params, tokens)
    assert (ours - reference).abs().max().item() <= 1e-4
    assert reference.abs().max().item() > 1.0  # the comparison is not between near-zero numbers
    assert type(LlamaPaperTokenizerFast.from_pretrained(out)) is LlamaPaperTokenizerFast


@pytest.mark.parametrize("num_shards,n_kv_heads,tied", CASES)
def test_convert_then_export_reproduces_the_shards(num_shards, n_kv_heads, tied, fixtures, tmp_path):
    make_meta_checkpoint(
        tmp_path / "meta" / "7B", fixtures, num_shards, n_kv_heads=n_kv_heads, tied=tied, dtype=torch.bfloat16
    )
    out = convert_meta_checkpoint(tmp_path / "meta" / "7B", tmp_path / "hf", progress=False)
    with safe_open(out / "model.safetensors", framework="pt") as handle:
        assert handle.get_tensor("model.norm.weight").dtype == torch.bfloat16  # the source dtype is kept
    back = export_meta_checkpoint(out, tmp_path / "back", num_shards=num_shards)
    for rank in range(num_shards):
        name = f"consolidated.{rank:02d}.pth"
        original = torch.load(tmp_path / "meta" / "7B" / name, weights_only=True)
        exported = torch.load(back / name, weights_only=True)
        assert list(exported) == list(original)
        for key, tensor in original.items():
            assert exported[key].dtype == tensor.dtype and torch.equal(exported[key], tensor), key
    params = json.loads((tmp_path / "meta" / "7B" / "params.json").read_text())
    assert json.loads((back / "params.json").read_text()) == params
    again = convert_meta_checkpoint(back, tmp_path / "hf2", progress=False)  # export output is valid input
    with (
        safe_open(out / "model.safetensors", framework="pt") as a,
        safe_open(again / "model.safetensors", framework="pt") as b,
    ):
        assert set(a.keys()) == set(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())


def test_dtype_option_and_cli(fixtures, tmp_path, capsys):
    make_meta_checkpoint(tmp_path / "meta" / "7B", fixtures)
    code = cli_main(
        [
            "convert-meta",
            "--input-dir",
            str(tmp_path / "meta" / "7B"),
            "--output-dir",
            str(tmp_path / "hf"),
            "--dtype",
            "bfloat16",
            "--quiet",
        ]
    )
    assert code == 0
    with safe_open(tmp_path / "hf" / "model.safetensors", framework="pt") as handle:
        assert {handle.get_tensor(k).dtype for k in handle.keys()} == {torch.bfloat16}
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["dtype"] == "bfloat16"
    # the output now holds a model: refused without --overwrite, replaced with it
    args = [
        "convert-meta",
        "--input-dir",
        str(tmp_path / "meta" / "7B"),
        "--output-dir",
        str(tmp_path / "hf"),
        "--quiet",
    ]
    assert cli_main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli_main(args + ["--overwrite"]) == 0
    with safe_open(tmp_path / "hf" / "model.safetensors", framework="pt") as handle:
        assert handle.get_tensor("model.norm.weight").dtype == torch.float32
    assert (
        cli_main(
            [
                "export-meta",
                "--input-dir",
                str(tmp_path / "hf"),
                "--output-dir",
                str(tmp_path / "m2"),
                "--num-shards",
                "3",
            ]
        )
        == 2
    )
    assert "does not divide" in capsys.readouterr().err


def _break(folder: Path, how: str) -> None:
    if how == "no params":
        (folder / "params.json").unlink()
    elif how == "missing shard":
        (folder / "consolidated.00.pth").unlink()
    elif how == "last shard missing":  # an interrupted download: no gap in the numbers to notice
        (folder / "consolidated.01.pth").unlink()
    elif how == "params disagree":
        params = json.loads((folder / "params.json").read_text())
        (folder / "params.json").write_text(json.dumps({**params, "n_kv_heads": 2}))
    elif how == "malformed value":
        params = json.loads((folder / "params.json").read_text())
        (folder / "params.json").write_text(json.dumps({**params, "norm_eps": "1e-6"}))
    elif how == "theta disagrees":
        params = json.loads((folder / "params.json").read_text())
        (folder / "params.json").write_text(json.dumps({**params, "rope_theta": 500000.0}))
    elif how == "ffn disagrees":
        params = json.loads((folder / "params.json").read_text())
        (folder / "params.json").write_text(json.dumps({**params, "multiple_of": 256}))
    elif how == "unknown key":
        shard = torch.load(folder / "consolidated.01.pth", weights_only=True)
        shard["layers.0.attention.bias"] = torch.zeros(3)
        torch.save(shard, folder / "consolidated.01.pth")
    elif how == "different layers":
        shard = torch.load(folder / "consolidated.01.pth", weights_only=True)
        torch.save({k: v for k, v in shard.items() if not k.startswith("layers.1.")}, folder / "consolidated.01.pth")
    elif how == "truncated":
        data = (folder / "consolidated.01.pth").read_bytes()
        (folder / "consolidated.01.pth").write_bytes(data[: len(data) // 2])
    elif how == "not a checkpoint":
        (folder / "consolidated.01.pth").write_text("hello")
    elif how == "different norms":  # found only while writing: the output must not be left half-written
        shard = torch.load(folder / "consolidated.01.pth", weights_only=True)
        shard["norm.weight"] = shard["norm.weight"] + 1
        torch.save(shard, folder / "consolidated.01.pth")


@pytest.mark.parametrize(
    "how,message",
    [
        ("no params", "params.json is missing"),
        ("missing shard", "lacks consolidated.00.pth"),
        ("last shard missing", "lacks consolidated.01.pth"),
        ("params disagree", "n_kv_heads"),
        ("malformed value", "norm_eps = '1e-6' is not a number"),
        ("ffn disagrees", "feed-forward width"),
        ("theta disagrees", "rope_theta = 500000.0, but the tensors give 10000"),
        ("unknown key", "Unknown key 'layers.0.attention.bias' in consolidated.01.pth"),
        ("different layers", "different checkpoints"),
        ("truncated", "consolidated.01.pth is truncated or not a PyTorch checkpoint"),
        ("not a checkpoint", "consolidated.01.pth is truncated or not a PyTorch checkpoint"),
        ("different norms", "norm.weight differs"),
    ],
)
def test_bad_input_gives_clear_errors_and_no_output(how, message, fixtures, tmp_path):
    folder = tmp_path / "meta" / "7B"
    make_meta_checkpoint(folder, fixtures, num_shards=2, n_layers=2)
    _break(folder, how)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        convert_meta_checkpoint(folder, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["meta"]  # no temporary folder left behind either


def test_output_dir_holding_the_input_is_refused_even_with_overwrite(fixtures, tmp_path):
    """Replacing the output folder must never delete the checkpoint being read (in-place conversion)."""
    folder = tmp_path / "meta" / "7B"
    make_meta_checkpoint(folder, fixtures)
    before = sorted(p.name for p in folder.iterdir())
    for output in (folder, folder.parent):
        with pytest.raises(FileExistsError, match="--input-dir"):
            convert_meta_checkpoint(folder, output, overwrite=True, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == before
    out = convert_meta_checkpoint(folder, tmp_path / "hf", progress=False)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(FileExistsError, match="--input-dir"):
        export_meta_checkpoint(out, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == before


def test_missing_tokenizer_is_named(fixtures, tmp_path):
    make_meta_checkpoint(tmp_path / "meta" / "7B", fixtures)
    (tmp_path / "meta" / "tokenizer.model").unlink()
    with pytest.raises(FileNotFoundError, match="--tokenizer"):
        convert_meta_checkpoint(tmp_path / "meta" / "7B", tmp_path / "out", progress=False)
