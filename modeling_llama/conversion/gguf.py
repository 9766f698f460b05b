"""`llama-paper export --format gguf`: one of our folders -> a llama.cpp GGUF file, one tensor at a time.

Written with `gguf` (llama.cpp's own Python library) the way llama.cpp's `convert_hf_to_gguf.py` writes a
SentencePiece LLaMA: architecture "llama", its metadata keys and tensor names, q/k rows permuted to GGML's
interleaved rotary pairs, the SentencePiece vocabulary with scores and token types, BOS/EOS/UNK ids. The tensor
table is written first (from shapes alone), then each tensor is read, converted and appended in turn, so memory
holds one tensor. The file appears atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .meta_layout import unpermute_rotary
from .native import SourceTensor, check_tensors, paper_config, read_config

# --outtype -> (GGML type of 2-D weights, llama.cpp file type name)
OUTTYPES = {
    "f32": ("F32", "ALL_F32"),
    "f16": ("F16", "MOSTLY_F16"),
    "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
    "q4_0": ("Q4_0", "MOSTLY_Q4_0"),
}
# our name (inside model.layers.N.) -> llama.cpp's (inside blk.N.)
LAYER_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
GLOBAL_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def gguf_name(ours: str) -> str:
    """`model.layers.3.self_attn.q_proj.weight` -> `blk.3.attn_q.weight` (llama.cpp's MODEL_ARCH.LLAMA names)."""
    stem = ours.removesuffix(".weight")
    if stem in GLOBAL_NAMES:
        return GLOBAL_NAMES[stem] + ".weight"
    _, _, layer, rest = stem.split(".", 3)
    return f"blk.{layer}.{LAYER_NAMES[rest]}.weight"


@dataclass(frozen=True)
class GGUFTensor:
    """One output tensor: its source, GGUF name and GGML type."""

    source: SourceTensor
    name: str
    ggml_type: object  # gguf.GGMLQuantizationType


def read_tensor(source: SourceTensor) -> torch.Tensor:
    """One tensor's bytes read straight from its file (no mmap: the pages do not stay in our RSS)."""
    plan = source.plan
    data = bytearray(plan.nbytes)
    with open(source.file, "rb", buffering=0) as handle:
        handle.seek(source.offset)
        view, done = memoryview(data), 0
        while done < plan.nbytes:
            read = handle.readinto(view[done:])
            if not read:
                raise ValueError(f"{source.file} ends inside {plan.name}: the file is truncated; re-save the model.")
            done += read
    return torch.frombuffer(data, dtype=plan.dtype).reshape(plan.shape)


def plan_tensors(sources: list[SourceTensor], outtype: str) -> list[GGUFTensor]:
    """GGML types per tensor: norms F32 (as llama.cpp), matrices --outtype; refuse what cannot be quantized."""
    import gguf

    T = gguf.GGMLQuantizationType
    weight_type = T[OUTTYPES[outtype][0]]
    block = gguf.GGML_QUANT_SIZES[weight_type][0]
    out = []
    for source in sources:
        shape = source.plan.shape
        ggml_type = T.F32 if len(shape) == 1 else weight_type
        # llama-quantize keeps the output head above 4 bits (Q6_K, which gguf-py cannot write): Q8_0 here.
        if ggml_type == T.Q4_0 and source.plan.name == "lm_head.weight":
            ggml_type = T.Q8_0
        if shape[-1] % gguf.GGML_QUANT_SIZES[ggml_type][0]:
            raise ValueError(
                f"--outtype {outtype} packs rows in blocks of {block}, but {source.plan.name} has rows of "
                f"{shape[-1]}; use --outtype f16 (or f32, bf16) for this model."
            )
        out.append(GGUFTensor(source, gguf_name(source.plan.name), ggml_type))
    return out


def encode(tensor: torch.Tensor, ggml_type) -> np.ndarray:
    """The bytes (as numpy) of `tensor` in GGML type `ggml_type`."""
    import gguf

    T = gguf.GGMLQuantizationType
    if ggml_type == T.F32:
        return tensor.to(torch.float32).numpy()
    if ggml_type == T.F16:
        return tensor.to(torch.float16).numpy()
    if ggml_type == T.BF16:  # bf16 -> bf16 is a byte copy; no need for numpy's missing bfloat16
        return tensor.to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint8)
    return gguf.quants.quantize(tensor.to(torch.float32).numpy(), ggml_type)


def ggml_nbytes_shape(shape: tuple[int, ...], ggml_type) -> tuple[np.dtype, tuple[int, ...], int]:
    """(numpy dtype, numpy shape, bytes) of a tensor of `shape` stored as `ggml_type`."""
    import gguf

    T = gguf.GGMLQuantizationType
    plain = {T.F32: np.dtype(np.float32), T.F16: np.dtype(np.float16)}
    if ggml_type in plain:
        return plain[ggml_type], shape, int(np.prod(shape)) * plain[ggml_type].itemsize
    byte_shape = gguf.quants.quant_shape_to_byte_shape(shape, ggml_type)
    return np.dtype(np.uint8), byte_shape, int(np.prod(byte_shape))


def vocabulary(tokenizer_model: Path, vocab_size: int) -> tuple[list[bytes], list[float], list[int]]:
    """Pieces (UTF-8), scores and token types per id, as llama.cpp's `_create_vocab_sentencepiece` makes them."""
    import gguf
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_model))
    types = gguf.TokenType
    pieces, scores, kinds = [], [], []
    for i in range(sp.get_piece_size()):
        kind = (
            types.UNKNOWN if sp.is_unknown(i) else types.CONTROL if sp.is_control(i)
            else types.UNUSED if sp.is_unused(i) else types.BYTE if sp.is_byte(i) else types.NORMAL
        )
        pieces.append(sp.id_to_piece(i).encode("utf-8"))
        scores.append(sp.get_score(i))
        kinds.append(int(kind))
    if len(pieces) > vocab_size:
        raise ValueError(
            f"{tokenizer_model} has {len(pieces)} pieces but the embedding has {vocab_size} rows: the folder's "
            "tokenizer.model belongs to another model; copy the right one in."
        )
    for i in range(len(pieces), vocab_size):  # embedding rows beyond the tokenizer: llama.cpp's [PAD] tokens
        pieces.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        kinds.append(int(types.UNUSED))
    return pieces, scores, kinds


def write_metadata(writer, config, model_dir: Path, outtype: str) -> None:
    """llama.cpp's keys for a LLaMA: general.*, llama.* hyper-parameters and tokenizer.ggml.*."""
    import json

    import gguf

    from ..sentencepiece_bpe import read_sentencepiece_model

    writer.add_name(model_dir.resolve().name)
    writer.add_file_type(gguf.LlamaFileType[OUTTYPES[outtype][1]])
    if outtype not in ("f32", "f16"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(float(config.rope_theta))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    tokenizer_model = model_dir / "tokenizer.model"
    if not tokenizer_model.is_file():
        raise FileNotFoundError(
            f"{tokenizer_model} is missing; a GGUF file carries the SentencePiece vocabulary. Copy the model's "
            "tokenizer.model into the folder."
        )
    pieces, scores, kinds = vocabulary(tokenizer_model, config.vocab_size)
    spec = read_sentencepiece_model(tokenizer_model)
    settings_file = model_dir / "tokenizer_config.json"
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(kinds)
    for add, token_id in ((writer.add_bos_token_id, spec.bos_id), (writer.add_eos_token_id, spec.eos_id),
                          (writer.add_unk_token_id, spec.unk_id), (writer.add_pad_token_id, spec.pad_id)):
        if token_id >= 0:
            add(token_id)
    writer.add_add_bos_token(bool(settings.get("add_bos_token", True)))
    writer.add_add_eos_token(bool(settings.get("add_eos_token", False)))
    writer.add_add_space_prefix(spec.add_dummy_prefix)
    writer.add_remove_extra_whitespaces(spec.remove_extra_whitespaces)


def write_tensors(writer, tensors: list[GGUFTensor], heads: dict[str, int]) -> None:
    """Read, permute, convert and append each tensor in table order, holding one at a time."""
    threads = torch.get_num_threads()
    # Casts and copies are memory-bound; OpenMP workers only add barriers (10x slower on a loaded machine).
    torch.set_num_threads(1)
    try:
        for tensor in tensors:
            data = read_tensor(tensor.source)
            kind = tensor.name.split(".")[-2]
            if kind in heads:  # transformers' rotate-half rows -> GGML's interleaved pairs (llama.cpp permute)
                data = unpermute_rotary(data, heads[kind])
            writer.write_tensor_data(encode(data, tensor.ggml_type))
            del data
    finally:
        torch.set_num_threads(threads)


def export_gguf(
    model_dir: str | os.PathLike, output: str | os.PathLike, *, outtype: str = "f16", overwrite: bool = False
) -> Path:
    """Write one of our folders (or a transformers Llama folder) as a llama.cpp GGUF file; returns its path."""
    import gguf

    model_dir, output = Path(model_dir), Path(output)
    if outtype not in OUTTYPES:
        raise ValueError(f"--outtype {outtype!r} is not one of {', '.join(OUTTYPES)}; pick one of those.")
    config = paper_config(read_config(model_dir), model_dir)
    if output.is_dir() or (output.exists() and not overwrite):
        raise FileExistsError(f"{output} already exists; pass --overwrite to replace it or choose another --output.")
    tensors = plan_tensors(check_tensors(model_dir, config), outtype)
    heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(temporary, arch="llama")
    try:
        write_metadata(writer, config, model_dir, outtype)
        for tensor in tensors:  # the tensor table first: shapes and types are known before any data is read
            dtype, shape, nbytes = ggml_nbytes_shape(tensor.source.plan.shape, tensor.ggml_type)
            raw = None if dtype != np.uint8 else tensor.ggml_type
            writer.add_tensor_info(tensor.name, shape, dtype, nbytes, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        write_tensors(writer, tensors, heads)
        writer.close()
        os.replace(temporary, output)
    except BaseException:
        writer.close()
        temporary.unlink(missing_ok=True)
        raise
    return output
