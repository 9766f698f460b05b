"""Benchmark: `export --format llama` and `--format gguf` (f16 and auto = bf16) of a ~2 GB bf16 folder vs `cp`.

Run: python benchmarks/bench_export.py [--preset 1B] [--repeats 2] [--workers N] [--workdir /tmp]
A random bf16 model of the preset (1B: 1.06e9 parameters, 2.11 GB) is written tensor by tensor as our folder. Each
export runs in its own child process, which alternates `cp -r` of the folder and the export (--repeats times,
medians), all reading from the page cache; import time is in neither. Peak RSS is the exporting process's own
(VmHWM of /proc/self/status: the helper processes below are not counted). A fourth child times the ceiling of
any exporter that computes its bytes in user space: `pwrite` of as many new bytes from a 16 MiB buffer, alternated
with `cp -r`.

This machine is a VM whose host takes back memory the guest has freed (free page reporting, ~2 s after the free);
writing 2 GB into such memory took 11-14 s here instead of 1.2 s. So before every timed step a separate process
touches and frees 1.25x the output's size, and every step starts on memory the host has backed, the same for all.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
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


CHILD = r"""
import json, os, resource, shutil, subprocess, sys, time
from pathlib import Path
src, work, repeats, job, workers = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
workers = int(workers) or None
size = (src / "model.safetensors").stat().st_size
out = work / "out"

def clean():
    subprocess.run(["rm", "-rf", str(out), str(work / "copy")], check=True)

def warm():  # freed memory goes back to this VM's host after ~2 s: start every step on memory it has backed
    clean()
    subprocess.run([sys.executable, "-c", f"x = b'1' * {int(size * 1.25)}"], check=True)

def timed(step):
    warm()
    self0, kids0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    step()
    wall = time.perf_counter() - start
    self1, kids1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    pairs = ((self0, self1), (kids0, kids1))
    cpu = sum(getattr(b, f) - getattr(a, f) for a, b in pairs for f in ("ru_utime", "ru_stime"))
    return wall, cpu

def cp():
    subprocess.run(["cp", "-r", str(src), str(work / "copy")], check=True)

def pwrite_new_bytes():  # 2.1 GB of new bytes from user space: the ceiling of any user-space exporter
    block = bytearray(b"\x01") * (16 << 20)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.ftruncate(fd, size)
    for offset in range(0, size, len(block)):
        os.pwrite(fd, memoryview(block)[: size - offset], offset)
    os.close(fd)

if job == "import":
    import modeling_llama.conversion.native, modeling_llama.conversion.gguf
    steps = {}
elif job == "baselines":
    steps = {"cp": cp, "pwrite": pwrite_new_bytes}
elif job == "llama":
    from modeling_llama.conversion.native import export_llama
    steps = {"cp": cp, "export": lambda: export_llama(src, out)}
else:
    from modeling_llama.conversion.gguf import export_gguf
    steps = {"cp": cp, "export": lambda: export_gguf(src, out, outtype=job, workers=workers)}
runs = {name: [] for name in steps}
for _ in range(repeats if steps else 0):  # alternate the steps, so machine noise hits all alike
    for name, step in steps.items():
        runs[name].append(timed(step))
written = (sum(f.stat().st_size for f in out.glob("*.safetensors")) if out.is_dir() else out.stat().st_size) \
    if "export" in steps else 0
clean()
# VmHWM: this process's own peak (ru_maxrss would also keep the peak of the parent it was forked from)
peak = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024
print(json.dumps({"runs": runs, "rss": peak, "written": written}))
"""


def child(job: str, work: Path, repeats: int, workers: int) -> dict:
    """Run one job in a fresh process; its JSON report."""
    argv = [sys.executable, "-c", CHILD, str(work / "ours"), str(work), str(repeats), job, str(workers)]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def medians(runs: list[list[float]]) -> tuple[float, float]:
    """(median wall, median CPU) of [wall, cpu] runs."""
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="1B")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="GGUF writer threads (0: the exporter's default)")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} cpus; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        work = Path(work)
        size = make_folder(work / "ours", args.preset)
        subprocess.run(["cat", str(work / "ours" / "model.safetensors")], stdout=subprocess.DEVNULL, check=True)
        print(f"model: preset {args.preset}, bf16, {size / 1e9:.2f} GB of safetensors")
        base_rss = child("import", work, 0, 0)["rss"]
        print(f"import-only child: peak RSS {base_rss / 1e6:.0f} MB")
        base = child("baselines", work, args.repeats, 0)["runs"]
        cp_s, _ = medians(base["cp"])
        wall, cpu = medians(base["pwrite"])
        print(f"ceiling, pwrite of {size / 1e9:.2f} GB of new bytes from a 16 MiB buffer: {wall:.2f} s "
              f"(cpu {cpu:.2f} s) = {wall / cp_s:.2f}x cp -r ({cp_s:.2f} s)")
        for job, label in (("llama", "native folder"), ("f16", "gguf f16"), ("auto", "gguf auto (bf16)")):
            report = child(job, work, args.repeats, args.workers)
            (cp_wall, cp_cpu), (wall, cpu) = medians(report["runs"]["cp"]), medians(report["runs"]["export"])
            print(f"{label}: export {wall:.2f} s vs cp -r {cp_wall:.2f} s: ratio {wall / cp_wall:.2f}x (goal <= 2x); "
                  f"cpu {cpu:.2f} s vs {cp_cpu:.2f} s: {cpu / cp_cpu:.2f}x; peak RSS {report['rss'] / 1e6:.0f} MB = "
                  f"{report['rss'] / size:.1%} of the model (goal < 40%; import alone {base_rss / size:.1%}); "
                  f"wrote {report['written'] / 1e9:.2f} GB")
            runs = {k: [f"{w:.2f}/{c:.2f}" for w, c in v] for k, v in report["runs"].items()}
            print(f"  runs (wall/cpu s): cp {runs['cp']}, export {runs['export']}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
