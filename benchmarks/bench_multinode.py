"""Wall time of the multi-node agreement runs on one machine (2 "nodes" x 1 process on 127.0.0.1) against the
single-node 2-process run (baseline: `accelerate launch --config_file training/configs/cpu-ddp.yaml`), measured in
the same process, one after the other, on the tiny preset for 6 steps (the runs of tests/training/test_multinode.py).

Every figure is a whole command: launcher start, imports, tokenizer load, 6 steps, checkpoints, evaluation, sample and
the final save; on a 2-core CPU the launchers and imports dominate, so the ratios say what multi-node launching costs
on top of that, not anything about training speed. Each run's losses are compared with the baseline's
(DDP: identical; ZeRO-3: float32 round-off).

    python benchmarks/bench_multinode.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.training.pretrain_helpers import subprocess_env, tiny_run  # noqa: E402


def _port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _accelerate(config: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(REPO / "training" / "configs" / f"{config}.yaml"), *args]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def cases(run: Path, folder: Path) -> dict[str, tuple[list[list[str]], dict]]:
    """name -> (one command per node, extra environment)."""
    pretrain = ["-m", "training.pretrain", "--config", str(run)]
    two = ["--num_machines", "2", "--main_process_ip", "127.0.0.1"]
    port_ddp, port_z3, endpoint = _port(), _port(), f"127.0.0.1:{_port()}"
    dying = str(REPO / "tests" / "training" / "launch_with_dying_rank.py")
    return {
        "1 node x 2, accelerate cpu-ddp (baseline)": ([_accelerate("cpu-ddp", *pretrain)], {}),
        "2 nodes x 1, accelerate cpu-ddp": ([_accelerate("cpu-ddp", *two, "--machine_rank", str(r),
                                                         "--main_process_port", port_ddp, *pretrain)
                                            for r in (0, 1)], {}),
        "2 nodes x 1, accelerate cpu-zero3": ([_accelerate("cpu-zero3", *two, "--machine_rank", str(r),
                                                           "--main_process_port", port_z3, *pretrain)
                                              for r in (0, 1)], {}),
        "2 nodes x 1, torchrun c10d": ([_torchrun("--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                                                  "--rdzv-endpoint", endpoint, "--rdzv-id", "bench", *pretrain)] * 2,
                                       {}),
        "1 node x 2, torchrun, rank 1 SIGKILLed in step 5, restarted": (
            [_torchrun("--standalone", "--nproc-per-node", "2", "--max-restarts", "1", dying, "--config", str(run),
                       "--resume")],
            {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", "DIE_RANK": "1", "DIE_AT_CALL": "5"}),
    }


def main() -> None:
    """Run every case once in a fresh output folder; print wall seconds and the ratio to the baseline."""
    import yaml

    base = Path(tempfile.mkdtemp(prefix="bench-multinode-"))
    results, baseline_losses, baseline_time = [], None, None
    for index, name in enumerate(cases(base / "x.yaml", base)):
        folder = base / f"case{index}"
        folder.mkdir()
        run = folder / "run.yaml"
        run.write_text(yaml.safe_dump(tiny_run(folder / "out", max_steps=6, micro_batch_size=4, log_steps=1,
                                               save_steps=2, sample_tokens=4).to_dict()))
        commands, extra = cases(run, folder)[name]
        env = {**subprocess_env(), **extra}
        started = time.perf_counter()
        nodes = [subprocess.Popen(c, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for c in commands]
        codes = [node.wait() for node in nodes]
        seconds = time.perf_counter() - started
        losses = [json.loads(line)["loss"] for line in (folder / "out" / "metrics.jsonl").read_text().splitlines()]
        if baseline_losses is None:
            baseline_losses, baseline_time = losses, seconds
        results.append({"case": name, "exit_codes": codes, "wall_s": round(seconds, 1),
                        "vs_baseline": round(seconds / baseline_time, 2),
                        "max_loss_diff": max(abs(a - b) for a, b in zip(losses, baseline_losses, strict=True))})
        print(json.dumps(results[-1]), flush=True)
    print(f"load average after the runs: {os.getloadavg()}")


if __name__ == "__main__":
    main()
