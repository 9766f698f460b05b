"""Accelerators we plan for and measure MFU against: peak dense bf16 FLOP/s and memory per device.

Peak numbers are the vendors' dense (no 2:4 sparsity) bf16 tensor-core figures from the data sheets:
A100 312 TFLOP/s (the number the paper's §2.4 throughput is measured against), H100 SXM 989 TFLOP/s,
H100 PCIe 756 TFLOP/s, H200 (SXM) 989 TFLOP/s. A CPU has no meaningful published peak, so its peak is None
and MFU is not reported there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GiB = 1024**3


@dataclass(frozen=True)
class Accelerator:
    """One device kind: its key, peak dense bf16 FLOP/s (None if unknown) and memory in bytes (None if unknown)."""

    key: str
    description: str
    peak_bf16_flops: float | None
    memory_bytes: int | None


ACCELERATORS: dict[str, Accelerator] = {
    a.key: a
    for a in (
        Accelerator("a100-40gb", "NVIDIA A100 40GB (SXM4/PCIe)", 312e12, 40 * GiB),
        Accelerator("a100-80gb", "NVIDIA A100 80GB (SXM4/PCIe)", 312e12, 80 * GiB),
        Accelerator("h100-sxm", "NVIDIA H100 SXM5 80GB", 989e12, 80 * GiB),
        Accelerator("h100-pcie", "NVIDIA H100 PCIe 80GB", 756e12, 80 * GiB),
        Accelerator("h200", "NVIDIA H200 SXM 141GB", 989e12, 141 * 10**9),
        Accelerator("cpu", "CPU (no published bf16 peak)", None, None),
    )
}

# CUDA device names as `torch.cuda.get_device_name()` reports them, matched case-insensitively, in order
# (the first match wins, so the more specific patterns come first).
_NAME_PATTERNS: list[tuple[str, str]] = [
    (r"h200", "h200"),
    (r"h100.*(pcie|pci-e)", "h100-pcie"),
    (r"h100", "h100-sxm"),
    (r"a100.*40\s*gb", "a100-40gb"),
    (r"a100", "a100-80gb"),
    (r"^cpu$", "cpu"),
]


def resolve_accelerator(device: object) -> Accelerator | None:
    """The table entry for a key ("a100-80gb"), a CUDA device name ("NVIDIA H100 80GB HBM3") or a torch.device."""
    name = _device_name(device)
    key = name.strip().lower()
    if key in ACCELERATORS:
        return ACCELERATORS[key]
    for pattern, target in _NAME_PATTERNS:
        if re.search(pattern, key):
            return ACCELERATORS[target]
    return None


def get_accelerator(key: str) -> Accelerator:
    """Like `resolve_accelerator`, but raises a ValueError listing the known keys when nothing matches."""
    accelerator = resolve_accelerator(key)
    if accelerator is None:
        raise ValueError(f"Unknown accelerator {key!r}; choose one of {', '.join(ACCELERATORS)}.")
    return accelerator


def peak_flops(device_name_or_key: object) -> float | None:
    """Peak dense bf16 FLOP/s of a device (key, CUDA name or torch.device); None for CPUs and unknown devices."""
    accelerator = resolve_accelerator(device_name_or_key)
    return accelerator.peak_bf16_flops if accelerator else None


def _device_name(device: object) -> str:
    """A name to match: CUDA devices are asked for their marketing name, anything else is turned into a string."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency; this keeps the module importable alone
        return str(device)
    if isinstance(device, str) and re.fullmatch(r"cuda(:\d+)?", device.strip()):
        device = torch.device(device.strip())
    if isinstance(device, torch.device):
        if device.type == "cuda" and torch.cuda.is_available():
            return torch.cuda.get_device_name(device)
        return device.type
    return str(device)


__all__ = ["Accelerator", "ACCELERATORS", "GiB", "get_accelerator", "peak_flops", "resolve_accelerator"]
