"""Benchmark: convert-meta on a synthetic ~2 GB, 4-shard checkpoint. Peak RSS vs checkpoint size, wall vs `cp`.

Run: python benchmarks/bench_convert.py [--gigabytes 2] [--repeats 3] [--workdir /tmp]
The conversion runs in a child process under `/usr/bin/time -v` (peak RSS = "Maximum resident set size"); that
child alternates `cp -r` of the checkpoint folder and `convert_meta_checkpoint` (--repeats times, medians
reported), both reading from the page cache; import time is not part of either. The RSS of a child that only
imports the package (Python + torch + transformers) is printed too: part of the peak, but independent of size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO / "tests" / "fixtures" / "llama-tokenizer" / "tokenizer.model"
SPLIT = {"wq": 0, "wk": 0, "wv": 0, "w1": 0, "w3": 0, "output": 0, "wo": 1, "w2": 1, "tok_embeddings": 1}


def make_checkpoint(folder: Path, gigabytes: float, shards: int = 4, dim: int = 2048) -> int:
    """A bf16 Meta-layout checkpoint of about `gigabytes` GB (random weights); returns its size in bytes."""
    hidden, vocab = 5632, 32000  # SwiGLU width of dim 2048 with multiple_of 256
    per_layer = 4 * dim * dim + 3 * dim * hidden
    layers = max(1, round((gigabytes * 1e9 / 2 - 2 * vocab * dim) / per_layer))
    gen = torch.Generator().manual_seed(0)
    rand = lambda *shape: (torch.randn(*shape, generator=gen) * 0.02).to(torch.bfloat16)  # noqa: E731
    full = {
        "tok_embeddings.weight": rand(vocab, dim),
        "norm.weight": torch.ones(dim, dtype=torch.bfloat16),
        "output.weight": rand(vocab, dim),
    }
    names = {
        "attention.wq": (dim, dim),
        "attention.wk": (dim, dim),
        "attention.wv": (dim, dim),
        "attention.wo": (dim, dim),
        "feed_forward.w1": (hidden, dim),
        "feed_forward.w2": (dim, hidden),
        "feed_forward.w3": (hidden, dim),
    }
    folder.mkdir(parents=True)
    shard_dicts = [dict() for _ in range(shards)]
    for key, tensor in full.items():
        for rank, piece in enumerate(_split(key, tensor, shards)):
            shard_dicts[rank][key] = piece
    # layers are generated one at a time and appended to each shard dict (the shards are saved at the end)
    for i in range(layers):
        for name, shape in names.items():
            key = f"layers.{i}.{name}.weight"
            for rank, piece in enumerate(_split(key, rand(*shape), shards)):
                shard_dicts[rank][key] = piece
        for name in ("attention_norm", "ffn_norm"):
            for rank in range(shards):
                shard_dicts[rank][f"layers.{i}.{name}.weight"] = torch.ones(dim, dtype=torch.bfloat16)
    for rank, shard in enumerate(shard_dicts):
        torch.save(shard, folder / f"consolidated.{rank:02d}.pth")
    params = {"dim": dim, "multiple_of": 256, "n_heads": 16, "n_layers": layers, "norm_eps": 1e-6, "vocab_size": -1}
    (folder / "params.json").write_text(json.dumps(params))
    shutil.copyfile(TOKENIZER, folder / "tokenizer.model")
    return sum(f.stat().st_size for f in folder.glob("consolidated.*.pth"))


def _split(key: str, tensor: torch.Tensor, shards: int) -> list[torch.Tensor]:
    axis = SPLIT.get(key.split(".")[-2])
    return [tensor.clone() for _ in range(shards)] if axis is None else [c.clone() for c in tensor.chunk(shards, axis)]


def timed_child(code: str, argv: list[str] | None = None) -> tuple[float, int, str]:
    """Run `python -c code [argv]` under /usr/bin/time -v; (wall seconds, peak RSS bytes, stdout)."""
    command = ["/usr/bin/time", "-v", sys.executable, "-c", code, *(argv or [])]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1)) * 1024
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", result.stderr).group(1)
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(clock.split(":"))))
    return seconds, rss, result.stdout


CHILD = """
import shutil, statistics, subprocess, sys, time
from modeling_llama.conversion.convert_meta import convert_meta_checkpoint
src, work, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
cp_times, convert_times = [], []
for i in range(repeats):  # alternate cp and convert, so machine noise hits both alike
    t = time.perf_counter()
    subprocess.run(["cp", "-r", src, work + "/copy"], check=True)
    cp_times.append(time.perf_counter() - t)
    shutil.rmtree(work + "/copy")
    t = time.perf_counter()
    convert_meta_checkpoint(src, work + "/hf", progress=False)
    convert_times.append(time.perf_counter() - t)
    if i + 1 < repeats:
        shutil.rmtree(work + "/hf")
print("CP", *cp_times)
print("CONVERT", *convert_times)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gigabytes", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    if not Path("/usr/bin/time").exists():
        sys.exit("needs /usr/bin/time (apt-get install time)")
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        work = Path(work)
        size = make_checkpoint(work / "meta", args.gigabytes)
        for f in (work / "meta").iterdir():  # warm the page cache the same way for cp and convert
            f.read_bytes()
        _, base_rss, _ = timed_child("import modeling_llama, modeling_llama.conversion.convert_meta")
        _, peak_rss, out = timed_child(CHILD, [str(work / "meta"), str(work), str(args.repeats)])
        cp_times = [float(x) for x in re.search(r"^CP (.*)$", out, re.M).group(1).split()]
        convert_times = [float(x) for x in re.search(r"^CONVERT (.*)$", out, re.M).group(1).split()]
        written = sum(f.stat().st_size for f in (work / "hf").glob("*.safetensors"))
    cp_s, convert_s = statistics.median(cp_times), statistics.median(convert_times)
    print(f"torch {torch.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} cpus (shared)")
    print(f"checkpoint: {size / 1e9:.2f} GB in 4 shards (bf16); safetensors written: {written / 1e9:.2f} GB")
    print(f"cp -r wall, median of {args.repeats}: {cp_s:.2f} s  (all: {', '.join(f'{t:.2f}' for t in cp_times)})")
    runs = ", ".join(f"{t:.2f}" for t in convert_times)
    print(f"convert wall, median of {args.repeats}: {convert_s:.2f} s  (all: {runs})")
    print(f"ratio convert / cp: {convert_s / cp_s:.2f}x   (in-process; Python/torch/transformers imports excluded)")
    print(
        f"peak RSS: {peak_rss / 1e6:.0f} MB = {peak_rss / size:.1%} of the checkpoint "
        f"(import-only baseline {base_rss / 1e6:.0f} MB; conversion adds {(peak_rss - base_rss) / 1e6:.0f} MB)"
    )


if __name__ == "__main__":
    main()
