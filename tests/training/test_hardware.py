"""The accelerator table: keys and CUDA device names map to the data-sheet peak bf16 FLOP/s."""

import pytest
import torch

from training.hardware import ACCELERATORS, GiB, get_accelerator, peak_flops


@pytest.mark.parametrize("name, expected", [
    ("a100-80gb", 312e12), ("A100-40GB", 312e12), ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A100-PCIE-40GB", 312e12),
    ("NVIDIA H100 80GB HBM3", 989e12), ("h100-sxm", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
    ("cpu", None), (torch.device("cpu"), None), ("Some Future GPU", None),
])
def test_peak_flops_by_key_or_device_name(name, expected):
    assert peak_flops(name) == expected


def test_memory_and_lookup_errors():
    assert get_accelerator("NVIDIA A100-SXM4-40GB").memory_bytes == 40 * GiB
    assert get_accelerator("a100-80gb").memory_bytes == 80 * GiB
    assert ACCELERATORS["h200"].memory_bytes > ACCELERATORS["h100-sxm"].memory_bytes
    with pytest.raises(ValueError, match="Unknown accelerator 'tpu-v9'.*a100-80gb"):
        get_accelerator("tpu-v9")
