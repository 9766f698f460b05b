#!/usr/bin/env bash
# The GPU checks the issues name (issue 4: benchmarks/gpu_mfu.py), as one script for a lent device machine.
#
# On the device (python3 3.12, torch 2.11, transformers 5.17 as of 2026-11) our code wants transformers >= 5.24: the
# wheel travels in .whl/ (ignored by git; fetch it here once with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl transformers==5.24.0
# ), so the device call is:  run(command="bash benchmarks/gpu_checks.sh", carry=[".whl"], timeout_s=540)
# It takes about 5 minutes on one H100 (two 1B-preset runs of 25 steps, eager and compiled); results land in $OUT.
# GPU_CHECKS_SMOKE=1 runs the same steps on CPU with the tiny preset (to check the script itself, no GPU needed).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
OUT=${OUT:-$(mktemp -d)}
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site || exit 1
fi
python3 -c "import sys, torch, transformers; print(sys.version.split()[0], 'torch', torch.__version__,
'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT/versions.txt"
if [ "${GPU_CHECKS_SMOKE:-0}" = 1 ]; then
    timeout 300 python3 benchmarks/gpu_mfu.py --device cpu --dtype fp32 --preset tiny --seq-len 128 --steps 2 \
        --warmup 1 --no-compile 2>&1 | tee "$OUT/gpu_mfu.txt"
    exit "${PIPESTATUS[0]}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
# bf16, SDPA (flash), 1B preset, 2048 tokens x 4: eager and torch.compile, tokens/s and MFU (goal >= 50% on H100).
timeout 420 python3 benchmarks/gpu_mfu.py --preset 1B --seq-len 2048 --batch 4 --steps 20 --warmup 5 2>&1 \
    | tee "$OUT/gpu_mfu.txt"
