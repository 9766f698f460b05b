"""The streamed GGUF writer (gguf_header, gguf_data): byte-identical to gguf-py's own GGUFWriter, kernel copies of
unchanged bf16 bytes (`--outtype auto`), chunked and threaded writes, and clear errors on truncated weights."""

from __future__ import annotations

import os
import shutil

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM
from modeling_llama.cli import main
from modeling_llama.conversion import gguf_data
from modeling_llama.conversion.gguf import data_pieces, export_gguf, gguf_name, plan_tensors, write_metadata
from modeling_llama.conversion.native import check_tensors, expected_shapes, paper_config, read_config

from .conftest import IDS, save_model

T = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory):
    """Tiny GQA model (4 heads, 2 KV heads) saved in bfloat16, as our pre-training runs save it."""
    torch.manual_seed(1)
    model = LlamaPaperForCausalLM(LlamaPaperConfig.from_preset("tiny", num_key_value_heads=2))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return save_model(model.to(torch.bfloat16), tmp_path_factory.mktemp("bf16") / "model")


def llama_cpp_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's `LlamaModel.permute` (convert_hf_to_gguf.py), written out independently of our code."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def reference_file(model_dir, path, outtype: str, weight_type) -> bytes:
    """The GGUF file gguf-py's GGUFWriter writes (whole tensors, its own packing) for the same keys and tensors."""
    config = paper_config(read_config(model_dir), model_dir)
    writer = gguf.GGUFWriter(path, arch="llama")
    write_metadata(writer, config, model_dir, outtype)
    heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}
    loaded = load_file(model_dir / "model.safetensors")
    for name in expected_shapes(config):  # llama.cpp's order: the model's own
        tensor, out_name = loaded[name], gguf_name(name)
        kind = out_name.split(".")[-2]
        if kind in heads:
            tensor = llama_cpp_permute(tensor, heads[kind])
        if tensor.dim() == 1 or weight_type == T.F32:
            writer.add_tensor(out_name, tensor.float().numpy())
        elif weight_type == T.F16:
            writer.add_tensor(out_name, tensor.to(torch.float16).numpy())
        elif weight_type == T.BF16:
            raw = tensor.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint8)
            writer.add_tensor(out_name, raw, raw_dtype=T.BF16)
        else:
            packed = gguf.quants.quantize(tensor.float().numpy(), weight_type)
            writer.add_tensor(out_name, packed, raw_dtype=weight_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@pytest.mark.parametrize(("outtype", "weight_type"), [("auto", T.BF16), ("f16", T.F16), ("q8_0", T.Q8_0)])
def test_streamed_file_is_byte_identical_to_gguf_writer(bf16_dir, tmp_path, outtype, weight_type):
    expected = reference_file(bf16_dir, tmp_path / "reference.gguf", outtype if outtype != "auto" else "bf16",
                              weight_type)
    # pieces of 1 KiB: every matrix is cut into many row runs, q/k into single heads; 1 thread and 3 threads
    for workers in (1, 3):
        path = export_gguf(bf16_dir, tmp_path / f"ours-{workers}.gguf", outtype=outtype, workers=workers,
                           chunk_bytes=1024)
        assert path.read_bytes() == expected, (outtype, workers)
    if outtype == "auto":  # the kernel copies a fallback replaces (other file systems): same bytes again
        def refuse(*args):
            raise OSError(18, "Invalid cross-device link")

        original = os.copy_file_range
        os.copy_file_range = refuse
        try:
            path = export_gguf(bf16_dir, tmp_path / "fallback.gguf", outtype="auto", workers=2)
        finally:
            os.copy_file_range = original
        assert path.read_bytes() == expected


def test_auto_keeps_bf16_bytes_by_kernel_copy_and_transformers_reads_it(bf16_dir, tmp_path, capsys):
    path = tmp_path / "default.gguf"
    assert main(["export", "--format", "gguf", "--model", str(bf16_dir), "--output", str(path)]) == 0  # no --outtype
    reader = gguf.GGUFReader(path)
    assert reader.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_BF16)
    source = load_file(bf16_dir / "model.safetensors")
    by_name = {gguf_name(name): tensor for name, tensor in source.items()}
    heads = {"attn_q": 4, "attn_k": 2}
    for tensor in reader.tensors:
        expected = by_name[tensor.name]
        kind = tensor.name.split(".")[-2]
        if expected.dim() == 1:  # norms: float32, as llama.cpp stores them
            assert tensor.tensor_type == T.F32 and np.array_equal(tensor.data, expected.float().numpy())
            continue
        assert tensor.tensor_type == T.BF16
        if kind in heads:
            expected = llama_cpp_permute(expected, heads[kind])
        assert bytes(tensor.data) == expected.contiguous().view(torch.uint8).numpy().tobytes(), tensor.name
    # the unchanged matrices go through copy_file_range, only q/k and the norms through user space
    config = paper_config(read_config(bf16_dir), bf16_dir)
    pieces = data_pieces(plan_tensors(check_tensors(bf16_dir, config), "bf16"), 0, heads, 1 << 20)
    copied = sum(p.nbytes for p in pieces if isinstance(p, gguf_data.CopyPiece))
    matrices = sum(t.numel() * 2 for n, t in source.items() if t.dim() == 2 and not n.endswith(("q_proj.weight",
                                                                                                  "k_proj.weight")))
    assert copied == matrices
    # an independent reader: transformers' GGUF loader un-permutes q/k and gives the bf16 model's logits
    ours = LlamaPaperForCausalLM.from_pretrained(bf16_dir, dtype=torch.float32).eval()
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32).eval()
    with torch.no_grad():
        assert (theirs(IDS).logits - ours(IDS).logits).abs().max().item() <= 1e-4


def test_auto_on_float32_is_f16_and_truncated_weights_are_named(random_dir, bf16_dir, tmp_path):
    path = export_gguf(random_dir, tmp_path / "f32-source.gguf")  # llama.cpp's auto: float32 sources become f16
    assert gguf.GGUFReader(path).fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_F16)
    broken = tmp_path / "broken"
    shutil.copytree(bf16_dir, broken)
    weights = broken / "model.safetensors"
    os.truncate(weights, weights.stat().st_size - 4096)
    for outtype, needle in (("auto", "shorter than expected"), ("f16", "truncated")):
        with pytest.raises((OSError, ValueError), match=needle):
            export_gguf(broken, tmp_path / "broken.gguf", outtype=outtype)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "f32-source.gguf"]  # no partial file left
