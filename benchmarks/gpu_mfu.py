"""Training MFU of LlamaPaperForCausalLM on one GPU: bf16, SDPA (flash) attention, torch.compile, ~1B preset.

Runs forward+backward+AdamW(fused) steps on random tokens and prints tokens/s and model-FLOPs utilisation:
flops_per_token(config, seq_len) (6N plus causal attention, PaLM appendix B; modeling_llama.flops) times tokens/s
over the device's peak dense bf16 FLOP/s (training.hardware.peak_flops). Baseline in the same process: the same
model in eager mode (no compile), so the ratio shows what compilation buys. Goal: >= 50% MFU on one H100 (the
paper reached ~48% on A100 at 65B).

    python benchmarks/gpu_mfu.py [--preset 1B] [--seq-len 2048] [--batch 4] [--steps 20] [--no-eager]
    python benchmarks/gpu_mfu.py --device cpu --preset tiny --seq-len 128 --steps 3   # smoke run without a GPU
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM  # noqa: E402
from modeling_llama.flops import count_parameters, flops_per_token  # noqa: E402
from training.activation_checkpointing import apply_activation_checkpointing  # noqa: E402
from training.hardware import peak_flops  # noqa: E402


def matmul_ceiling(device: torch.device, n: int = 8192, repeats: int = 10) -> float:
    """Measured bf16 FLOP/s of an n x n x n matrix product on random data: what the chip really gives a GEMM."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def profile_steps(step, steps: int = 3) -> None:
    """Print where the GPU time of `steps` steps goes: kernel families, then the top kernels."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    families = {"gemm": ("gemm", "nvjet", "cutlass", "sm90_xmma", "cublas"), "attention": ("flash", "fmha", "attn"),
                "fused (triton)": ("triton",), "optimizer": ("adam", "multi_tensor", "foreach")}
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        us = getattr(event, "self_device_time_total", 0.0) or 0.0
        if us <= 0 or getattr(event, "device_type", None) != torch.autograd.DeviceType.CUDA:
            continue
        name = event.key.lower()
        family = next((f for f, keys in families.items() if any(k in name for k in keys)), "other")
        totals[family] = totals.get(family, 0.0) + us
    whole = sum(totals.values()) or 1.0
    print("GPU time by kernel family: " + ", ".join(f"{f} {t / whole:.0%}" for f, t in
                                                      sorted(totals.items(), key=lambda x: -x[1]))
          + f" (of {whole / 1e3 / steps:.1f} ms per step)")
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=20, max_name_column_width=70))


def measure(config: LlamaPaperConfig, args, compile_model: bool) -> tuple[float, float]:
    """Median tokens/s over --steps timed steps after --warmup steps, and peak GPU memory in GiB (0 on CPU)."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    model = LlamaPaperForCausalLM(config).to(device=device, dtype=dtype).train()
    model.set_attn_implementation(args.attn)
    apply_activation_checkpointing(model, args.activation_checkpointing)
    if compile_model:
        model.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                  fused=device.type == "cuda")
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq_len), device=device)

    def step():
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times.sort()
    if args.profile and device.type == "cuda":
        try:
            profile_steps(step)
        except Exception as error:  # a profiler hiccup must not lose the timings above
            print(f"profiling failed: {error!r}")
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    return args.batch * args.seq_len / times[len(times) // 2], peak_gib


def main() -> None:
    """Print tokens/s and MFU, compiled vs eager."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="1B")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--attn", default="sdpa", help="attention implementation (sdpa, flash_attention_2, ...)")
    parser.add_argument("--activation-checkpointing", choices=("none", "full", "selective"), default="none")
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--no-eager", action="store_true", help="skip the eager baseline")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--profile", action="store_true", help="profile 3 steps after timing (CUDA): kernel families")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_mfu.py: no CUDA device; run it on a GPU machine, or pass --device cpu for a smoke run.")
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    config = LlamaPaperConfig.from_preset(args.preset, vocab_size=args.vocab_size,
                                          max_position_embeddings=max(2048, args.seq_len))
    flops = flops_per_token(config, args.seq_len)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    peak = peak_flops(torch.device(args.device)) if args.device == "cuda" else None
    print(f"device {name}; peak bf16 {peak / 1e12 if peak else float('nan'):.0f} TFLOP/s; preset {args.preset} "
          f"({count_parameters(config) / 1e9:.2f}B parameters), batch {args.batch} x {args.seq_len}, {args.dtype}, "
          f"attention {args.attn}, activation checkpointing {args.activation_checkpointing}; torch {torch.__version__}")
    rows = []
    if not args.no_eager:
        rows.append(("eager", measure(config, args, compile_model=False)))
        if args.device == "cuda":
            torch.cuda.empty_cache()
    if not args.no_compile:
        rows.append(("torch.compile", measure(config, args, compile_model=True)))
    # MFU is against the data-sheet peak (the paper's convention); the measured GEMM rate says how much of the
    # gap is the chip's own (clocks, power) rather than our model's.
    ceiling = matmul_ceiling(torch.device(args.device)) if args.device == "cuda" else None
    if ceiling:
        share = f" ({ceiling / peak:.0%} of the data-sheet peak)" if peak else ""
        print(f"measured 8192^3 bf16 matmul: {ceiling / 1e12:.0f} TFLOP/s{share}")
    print("| mode | tokens/s | model TFLOP/s | MFU | of measured matmul | peak memory | vs eager |\n"
          "|---|---|---|---|---|---|---|")
    for mode, (tokens_per_s, peak_gib) in rows:  # (each measure() freed its model on return)
        achieved = tokens_per_s * flops
        mfu = f"{achieved / peak:.1%}" if peak else "n/a"
        of_gemm = f"{achieved / ceiling:.1%}" if ceiling else "n/a"
        ratio = f"{tokens_per_s / rows[0][1][0]:.2f}x" if not args.no_eager else "-"
        print(f"| {mode} | {tokens_per_s:,.0f} | {achieved / 1e12:.1f} | {mfu} | {of_gemm} | {peak_gib:.1f} GiB "
              f"| {ratio} |", flush=True)


if __name__ == "__main__":
    main()
