"""Our LlamaPaperForCausalLM vs transformers' LlamaForCausalLM on the same weights, in the same process.

Prints one line per measurement with the ratio baseline_time / our_time (> 1 means we are faster):
- train: forward + backward + AdamW step, fp32, batch 8 x 256, the ~20M-parameter "small" preset;
- generate: greedy `generate()`, batch 1, 256 new tokens.
Runs alternate between the two models so that machine noise hits both alike; the median is reported.

    python benchmarks/bench_model.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM  # noqa: E402
from tests.modeling_llama.reference import reference_model  # noqa: E402


def time_train_step(model: torch.nn.Module, batch: torch.Tensor) -> float:
    """Seconds for one forward+backward+AdamW step (optimizer created outside the timing)."""
    opt = model._bench_opt
    start = time.perf_counter()
    loss = model(batch, labels=batch).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def time_generate(model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int) -> float:
    """Seconds for greedy generation of exactly `new_tokens` tokens."""
    start = time.perf_counter()
    out = model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    elapsed = time.perf_counter() - start
    assert out.shape[1] == prompt.shape[1] + new_tokens
    return elapsed


def main() -> None:
    """Run both comparisons and print the ratios."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = LlamaPaperForCausalLM(LlamaPaperConfig.from_preset("small"))
    ref = reference_model(ours)
    n = sum(p.numel() for p in ours.parameters())
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} threads, model {n / 1e6:.1f}M params")

    batch = torch.randint(3, ours.config.vocab_size, (8, 256))
    for m in (ours, ref):
        m.train()
        m._bench_opt = torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
        time_train_step(m, batch)  # warm-up (allocations, optimizer state)
    t_ours, t_ref = [], []
    for _ in range(args.repeats):
        t_ref.append(time_train_step(ref, batch))
        t_ours.append(time_train_step(ours, batch))
    mo, mr = statistics.median(t_ours), statistics.median(t_ref)
    print(f"train step   ours {mo * 1e3:8.1f} ms   transformers LlamaForCausalLM {mr * 1e3:8.1f} ms   ratio {mr / mo:.3f}")

    prompt = torch.randint(3, ours.config.vocab_size, (1, 16))
    for m in (ours, ref):
        m.eval()
    with torch.inference_mode():
        for m in (ours, ref):
            time_generate(m, prompt, 8)
        g_ours, g_ref = [], []
        for _ in range(args.repeats):
            g_ref.append(time_generate(ref, prompt, args.new_tokens))
            g_ours.append(time_generate(ours, prompt, args.new_tokens))
    mo, mr = statistics.median(g_ours), statistics.median(g_ref)
    print(f"generate     ours {mo * 1e3:8.1f} ms   transformers LlamaForCausalLM {mr * 1e3:8.1f} ms   ratio {mr / mo:.3f}"
          f"   ({args.new_tokens / mo:.0f} tokens/s)")


if __name__ == "__main__":
    main()
