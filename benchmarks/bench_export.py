"""Benchmark: `export --format llama` and `--format gguf` of a ~2 GB bf16 folder. Peak RSS vs model size, wall vs `cp`.

Run: python benchmarks/bench_export.py [--preset 1B] [--outtype f16] [--repeats 2] [--workdir /tmp]
A random bf16 model of the preset (1B: 1.06e9 parameters, 2.1 GB) is written tensor by tensor as our folder. Each
format runs in its own child process under `/usr/bin/time -v` (peak RSS = "Maximum resident set size"); the child
alternates `cp -r` of the folder, `dd bs=16M` of its weights to a new file and the export (--repeats times, medians
reported), all reading from the page cache; import time is in none. `cp` copies in the kernel (copy_file_range), as
the native export does; a GGUF export writes new bytes, as `dd` (read + write through user space) does. The RSS of
a child that only imports the package is printed too: part of the peak, but independent of the model size.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_convert import timed_child  # noqa: E402

TOKENIZER = REPO / "tests" / "fixtures" / "llama-tokenizer" / "tokenizer.model"


def make_folder(folder: Path, preset: str) -> int:
    """Our folder of a random bf16 model of `preset`, written one tensor at a time; returns the weights' bytes."""
    from modeling_llama import LlamaPaperConfig, LlamaPaperTokenizerFast
    from modeling_llama.conversion.native import expected_shapes
    from modeling_llama.conversion.safetensors_stream import TensorPlan, write_safetensors

    config = LlamaPaperConfig.from_preset(preset)
    config.dtype = "bfloat16"
    config.architectures = ["LlamaPaperForCausalLM"]
    folder.mkdir(parents=True)
    plans = [TensorPlan(name, shape, torch.bfloat16) for name, shape in expected_shapes(config).items()]
    gen = torch.Generator().manual_seed(0)
    write_safetensors(folder / "model.safetensors", plans,
                      lambda plan: (torch.randn(plan.shape, generator=gen) * 0.02).to(torch.bfloat16))
    config.save_pretrained(folder)
    LlamaPaperTokenizerFast(vocab_file=str(TOKENIZER)).save_pretrained(folder)
    return (folder / "model.safetensors").stat().st_size


CHILD = """
import shutil, subprocess, sys, time
from pathlib import Path
from modeling_llama.conversion.native import export_llama
from modeling_llama.conversion.gguf import export_gguf
src, work, repeats, fmt, outtype = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
out = work / ("native" if fmt == "llama" else "model.gguf")
cp_times, cat_times, export_times = [], [], []
for i in range(repeats):  # alternate cp, dd and export, so machine noise hits all alike
    t = time.perf_counter()
    subprocess.run(["cp", "-r", src, str(work / "copy")], check=True)
    cp_times.append(time.perf_counter() - t)
    shutil.rmtree(work / "copy")
    t = time.perf_counter()  # the same bytes through user space (cp and cat copy in the kernel; a GGUF export cannot)
    subprocess.run(["dd", f"if={src}/model.safetensors", f"of={work}/cat.bin", "bs=16M", "status=none"], check=True)
    cat_times.append(time.perf_counter() - t)
    (work / "cat.bin").unlink()
    t = time.perf_counter()
    if fmt == "llama":
        export_llama(src, out, overwrite=True)
    else:
        export_gguf(src, out, outtype=outtype, overwrite=True)
    export_times.append(time.perf_counter() - t)
size = sum(f.stat().st_size for f in out.glob("*.safetensors")) if out.is_dir() else out.stat().st_size
print("CP", *cp_times)
print("DD", *cat_times)
print("EXPORT", *export_times)
print("WRITTEN", size)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="1B")
    parser.add_argument("--outtype", default="f16", help="GGUF outtype (f32, f16, bf16, q8_0, q4_0)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    if not Path("/usr/bin/time").exists():
        sys.exit("needs /usr/bin/time (apt-get install time)")
    print(f"torch {torch.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} cpus (shared)")
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        work = Path(work)
        size = make_folder(work / "ours", args.preset)
        (work / "ours" / "model.safetensors").read_bytes()  # warm the page cache the same way for cp and export
        print(f"model: preset {args.preset}, bf16, {size / 1e9:.2f} GB of safetensors")
        _, base_rss, _ = timed_child("import modeling_llama.conversion.native, modeling_llama.conversion.gguf")
        print(f"import-only child: peak RSS {base_rss / 1e6:.0f} MB")
        for fmt in ("llama", "gguf"):
            _, peak, out = timed_child(CHILD, [str(work / "ours"), str(work), str(args.repeats), fmt, args.outtype])
            cp = [float(x) for x in re.search(r"^CP (.*)$", out, re.M).group(1).split()]
            cat = [float(x) for x in re.search(r"^DD (.*)$", out, re.M).group(1).split()]
            export = [float(x) for x in re.search(r"^EXPORT (.*)$", out, re.M).group(1).split()]
            written = int(re.search(r"^WRITTEN (\d+)$", out, re.M).group(1))
            cp_s, export_s = statistics.median(cp), statistics.median(export)
            label = "llama (native folder)" if fmt == "llama" else f"gguf {args.outtype}"
            runs = lambda times: ", ".join(f"{t:.2f}" for t in times)  # noqa: E731
            print(f"{label}: wrote {written / 1e9:.2f} GB; cp -r median {cp_s:.2f} s (all {runs(cp)}), "
                  f"export median {export_s:.2f} s (all {runs(export)}); ratio export / cp {export_s / cp_s:.2f}x")
            cat_s = statistics.median(cat)
            print(f"{label}: dd bs=16M (user-space copy of the weights) median {cat_s:.2f} s (all {runs(cat)}); "
                  f"ratio export / dd {export_s / cat_s:.2f}x")
            added = peak - base_rss
            print(f"{label}: peak RSS {peak / 1e6:.0f} MB = {peak / size:.1%} of the model "
                  f"(export adds {added / 1e6:.0f} MB = {added / size:.1%} over the import-only child)")
            subprocess.run(["rm", "-rf", str(work / "native"), str(work / "model.gguf")], check=True)


if __name__ == "__main__":
    main()
