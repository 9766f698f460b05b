#!/usr/bin/env bash
# The GPU checks the issues name (issue 4: benchmarks/gpu_mfu.py), as one script for a lent device machine.
#
# On the device (python3 3.12, torch 2.11, transformers 5.17, no `datasets` as of 2026-11) our code wants
# transformers >= 5.24 and datasets: the wheels travel in .whl/ (ignored by git; fetch them here once with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl transformers==5.24.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
# ), so the device call is:  run(command="bash benchmarks/gpu_checks.sh", carry=[".whl"], timeout_s=540)
# Steps, each under its own time limit, results in $OUT (at most 8 files come back); GPU_CHECKS_STEPS picks them
# (default "mfu b16 ac loop versus", which fits one call; run "ac-compiled" as a second one):
#   mfu, b16: benchmarks/gpu_mfu.py, the 1B preset, bf16, SDPA, 4 x 2048 tokens, eager and torch.compile (MFU goal
#      >= 50%) with a kernel-family profile of each, then compiled at 16 x 2048;
#   ac, ac-compiled: full and selective activation checkpointing (memory/speed), eager, then compiled with the
#      no-checkpointing baseline in the same call;
#   loop: our training loop itself (`python -m training.pretrain`) on the same model and batch, bf16 autocast,
#      compiled, on the shipped corpus: its metrics.jsonl carries the tokens/s and MFU it logs;
#   versus: benchmarks/bench_train_loop.py on the GPU (tiny preset, bf16): our loop vs Trainer where per-step host
#      work shows.
# Wall time on one H100 (2026-11-28): 464 s for "mfu b16 ac loop versus"; "ac-compiled" alone took 247 s on an H200.
# GPU_CHECKS_SMOKE=1 runs the same steps on CPU with the tiny preset (checks the script itself; ~3 min, no GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
OUT=${OUT:-$(mktemp -d)}
if [ "${GPU_CHECKS_SMOKE:-0}" != 1 ] && compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site || exit 1
fi
python3 -c "import sys, torch, transformers; print(sys.version.split()[0], 'torch', torch.__version__,
'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT/env.txt"
if [ "${GPU_CHECKS_SMOKE:-0}" = 1 ]; then  # the same steps on CPU, tiny model
    mfu=(python3 benchmarks/gpu_mfu.py --device cpu --dtype fp32 --preset tiny --seq-len 128)
    model=(--set model_preset=tiny --set seq_len=128 --mixed-precision no)
    versus=(--repeats 1 --steps 12 --skip 4)
else
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee -a "$OUT/env.txt"
    mfu=(python3 benchmarks/gpu_mfu.py --preset 1B --seq-len 2048)
    model=(--set model_preset=1B --set seq_len=2048 --mixed-precision bf16)
    versus=(--repeats 2 --steps 100 --skip 20 --mixed-precision bf16)
fi
status=0
steps=" ${GPU_CHECKS_STEPS:-mfu b16 ac loop versus} "
on() { [[ "$steps" == *" $1 "* ]]; }
on mfu && { timeout 200 "${mfu[@]}" --batch 4 --steps 10 --warmup 3 --profile 2>&1 | tee "$OUT/gpu_mfu.txt" || status=1; }
on b16 && { timeout 120 "${mfu[@]}" --batch 16 --steps 6 --warmup 3 --no-eager 2>&1 | tee "$OUT/gpu_mfu_b16.txt" || status=1; }
if on ac; then  # eager: what checkpointing costs without a compiler
    for mode in full selective; do
        timeout 60 "${mfu[@]}" --batch 4 --steps 6 --warmup 2 --no-compile --activation-checkpointing $mode 2>&1 \
            | tee -a "$OUT/gpu_ac.txt" || status=1
    done
fi
if on ac-compiled; then  # compiled, with the no-checkpointing baseline in the same call
    for mode in none full selective; do
        timeout 90 "${mfu[@]}" --batch 4 --steps 6 --warmup 3 --no-eager --activation-checkpointing $mode 2>&1 \
            | tee -a "$OUT/gpu_ac_compiled.txt" || status=1
    done
fi
if on loop; then
    rm -rf /tmp/gpu-loop
    timeout 260 python3 -m training.pretrain --preset demo --output-dir /tmp/gpu-loop --max-steps 40 --log-steps 5 \
        --save-steps 0 --compile "${model[@]}" --set micro_batch_size=4 --set gradient_accumulation_steps=1 \
        --set eval_max_batches=2 --set tensorboard=false --set max_shard_size=5GB 2>&1 | tee "$OUT/gpu_loop.txt" \
        || status=1
    cp /tmp/gpu-loop/metrics.jsonl /tmp/gpu-loop/run_info.json "$OUT/" 2>/dev/null
fi
on versus && { timeout 120 python3 benchmarks/bench_train_loop.py "${versus[@]}" 2>&1 | tee "$OUT/loop_vs_trainer.txt" \
    || status=1; }
exit $status
