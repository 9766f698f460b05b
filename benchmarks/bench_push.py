"""Benchmark: `llama-paper push` of a ~2 GB model folder to the local Hub; re-push of the unchanged folder.

Run: python benchmarks/bench_push.py [--gigabytes 2] [--workdir /tmp]
A synthetic folder (4 safetensors shards of random bf16 weights + index + config, ~2 GB) is pushed with
`python -m publishing.push` (a child process, as a user runs it; HF_HUB_DISABLE_XET=1: LFS basic transfer) to
`publishing.local_hub` serving in this process on 127.0.0.1 from a folder on the same disk. Reported: wall time,
bytes the server received (LFS + regular), commits; then the same for a re-push of the unchanged folder. Baselines in
the same process: `cp -r` of the folder to the same disk, and raw HTTP PUTs of the same files to a second local-Hub
instance (http.client, no Hub protocol, no client-side hashing), which is the floor for any upload through this
server. Both push and baselines read the folder from the page cache (it was just written).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from publishing.local_hub import HubServer  # noqa: E402


def make_folder(folder: Path, gigabytes: float, shards: int = 4) -> int:
    """A model-like folder of `shards` safetensors files (bf16 random) totalling ~`gigabytes` GB; returns bytes."""
    folder.mkdir(parents=True)
    per_shard = int(gigabytes * 1e9 / shards / 2)  # bf16 elements
    gen = torch.Generator().manual_seed(0)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        tensor = torch.randn(per_shard // 4096, 4096, generator=gen).to(torch.bfloat16)
        save_file({f"layer{i}.weight": tensor}, str(folder / name), metadata={"format": "pt"})
        weight_map[f"layer{i}.weight"] = name
        del tensor
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama_paper", "hidden_size": 4096}))
    return sum(p.stat().st_size for p in folder.iterdir())


def timed_push(folder: Path, hub: HubServer, home: Path) -> tuple[float, dict]:
    """Wall time of `python -m publishing.push` and what the server received meanwhile."""
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_TOKEN="hf_bench", HF_HOME=str(home), HF_HUB_DISABLE_XET="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1")
    env.pop("HF_HUB_OFFLINE", None)
    before = hub.snapshot()
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "publishing.push", "--model", str(folder), "--repo-id",
                          "bench/model-2gb"], env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"push failed: {out.stderr}")
    after = hub.snapshot()
    return wall, {k: after[k] - before[k] for k in ("lfs_bytes", "regular_bytes", "commits", "lfs_objects")}


def raw_put(folder: Path, hub: HubServer) -> tuple[float, int]:
    """Wall time of plain HTTP PUTs of every file to the server's LFS endpoint (announced first, hashes precomputed
    outside the timing): the transfer and the server's own work, nothing else."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    oids = {}
    for p in files:
        digest = hashlib.sha256()
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        oids[p] = digest.hexdigest()
    hub.announced.update(oids.values())
    host, port = hub.server_address[:2]
    sent = 0
    start = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, blocksize=1 << 20)
    for p in files:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            conn.request("PUT", f"/api/local-hub/lfs/{oids[p]}", body=fh, headers={"Content-Length": str(size)})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
        sent += size
    conn.close()
    return time.perf_counter() - start, sent


def main() -> None:
    """Build the folder, time cp, raw PUT, push and re-push; print a JSON summary with the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gigabytes", type=float, default=2.0)
    parser.add_argument("--workdir", default=None, help="where the temporary folders go (default: the system temp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-push-") as tmp:
        tmp = Path(tmp)
        size = make_folder(tmp / "model", args.gigabytes)
        start = time.perf_counter()
        subprocess.run(["cp", "-r", str(tmp / "model"), str(tmp / "model-copy")], check=True)
        cp_s = time.perf_counter() - start
        shutil.rmtree(tmp / "model-copy")
        with HubServer(0, tmp / "baseline-store") as baseline:
            put_s, put_bytes = raw_put(tmp / "model", baseline)
        shutil.rmtree(tmp / "baseline-store")
        with HubServer(0, tmp / "store") as hub:
            push_s, first = timed_push(tmp / "model", hub, tmp / "home")
            repush_s, second = timed_push(tmp / "model", hub, tmp / "home")
        result = {
            "folder_bytes": size, "cp_s": round(cp_s, 2), "raw_put_s": round(put_s, 2), "raw_put_bytes": put_bytes,
            "push_s": round(push_s, 2), "push_received": first, "push_MB_per_s": round(size / push_s / 1e6, 1),
            "push_vs_cp": round(push_s / cp_s, 2), "push_vs_raw_put": round(push_s / put_s, 2),
            "repush_s": round(repush_s, 2), "repush_received": second,
        }
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
