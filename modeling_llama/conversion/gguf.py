"""`llama-paper export --format gguf`: one of our folders -> a llama.cpp GGUF file, streamed piece by piece.

The file is what llama.cpp's `convert_hf_to_gguf.py` writes for a SentencePiece LLaMA: architecture "llama", its
metadata keys and tensor names, q/k rows permuted to GGML's interleaved rotary pairs, the SentencePiece vocabulary
with scores and token types, BOS/EOS/UNK ids; the key-values are collected with `gguf` (llama.cpp's own Python
library). Shapes and types are known before any data is read, so the header goes first (`gguf_header`) and the
tensor data follows in small pieces written at their offsets by a few threads (`gguf_data`): bytes that do not change
(`--outtype auto` / bf16 on a bf16 model) are copied by the kernel, the rest is read, permuted and cast a few MB at a
time. The file appears atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .gguf_data import CHUNK_BYTES, tensor_pieces, write_at, write_pieces
from .gguf_header import encode_header, pad, tensor_offsets
from .native import SourceTensor, check_tensors, paper_config, read_config

# --outtype -> (GGML type of 2-D weights, llama.cpp file type name)
OUTTYPES = {
    "f32": ("F32", "ALL_F32"),
    "f16": ("F16", "MOSTLY_F16"),
    "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
    "q4_0": ("Q4_0", "MOSTLY_Q4_0"),
}
# "auto" (llama.cpp's default since it has one): the 16-bit type of the source, f16 for float32 sources
OUTTYPE_CHOICES = ("auto", *OUTTYPES)
ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT: llama.cpp's files use it (no general.alignment key)
# SentencePiece piece type -> llama.cpp token type (gguf.TokenType): the numbers are the same, but llama.cpp's
# `_create_vocab_sentencepiece` asks sp.is_unknown / is_control / is_unused / is_byte, so USER_DEFINED reads NORMAL.
TOKEN_TYPES = {2: 2, 3: 3, 5: 5, 6: 6}
NORMAL_TOKEN = 1
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
    """One output tensor: its source, GGUF name, GGML type and size in the file."""

    source: SourceTensor
    name: str
    ggml_type: int  # gguf.GGMLQuantizationType

    @property
    def nbytes(self) -> int:
        """Bytes of its data in the GGUF file (before alignment padding)."""
        import gguf

        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(self.ggml_type)]
        return int(torch.Size(self.source.plan.shape).numel()) // block * type_size


def resolve_outtype(outtype: str, sources: list[SourceTensor]) -> str:
    """`auto` -> bf16 when the first matrix is bf16, else f16 (llama.cpp's heuristic); others unchanged."""
    if outtype not in OUTTYPE_CHOICES:
        raise ValueError(f"--outtype {outtype!r} is not one of {', '.join(OUTTYPE_CHOICES)}; pick one of those.")
    if outtype != "auto":
        return outtype
    first = next((s.plan.dtype for s in sources if len(s.plan.shape) > 1), torch.float16)
    return "bf16" if first == torch.bfloat16 else "f16"


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
        out.append(GGUFTensor(source, gguf_name(source.plan.name), int(ggml_type)))
    return out


def vocabulary(spec, tokenizer_model: Path, vocab_size: int) -> tuple[list[bytes], list[float], list[int]]:
    """Pieces (UTF-8), scores and token types per id, as llama.cpp's `_create_vocab_sentencepiece` makes them."""
    pieces = [piece.encode("utf-8") for piece, _, _ in spec.pieces]
    scores = [score for _, score, _ in spec.pieces]
    kinds = [TOKEN_TYPES.get(kind, NORMAL_TOKEN) for _, _, kind in spec.pieces]
    if len(pieces) > vocab_size:
        raise ValueError(
            f"{tokenizer_model} has {len(pieces)} pieces but the embedding has {vocab_size} rows: the folder's "
            "tokenizer.model belongs to another model; copy the right one in."
        )
    for i in range(len(pieces), vocab_size):  # embedding rows beyond the tokenizer: llama.cpp's [PAD] tokens
        pieces.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        kinds.append(5)  # UNUSED
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
    spec = read_sentencepiece_model(tokenizer_model)  # read once: pieces, scores, types and the settings
    pieces, scores, kinds = vocabulary(spec, tokenizer_model, config.vocab_size)
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


def gguf_metadata(config, model_dir: Path, outtype: str) -> dict:
    """The key-values (key -> gguf.GGUFValue) llama.cpp expects, collected by gguf-py's own `GGUFWriter`."""
    import gguf

    writer = gguf.GGUFWriter(None, arch="llama")  # no file: only its typed key-value table is used
    write_metadata(writer, config, model_dir, outtype)
    return writer.kv_data[0]


def data_pieces(tensors: list[GGUFTensor], start: int, heads: dict[str, int], chunk_bytes: int) -> list:
    """Every tensor's pieces, the data section beginning at byte `start` of the file."""
    offsets = tensor_offsets([t.nbytes for t in tensors], ALIGNMENT)
    pieces = []
    for tensor, offset in zip(tensors, offsets, strict=True):
        plan, kind = tensor.source.plan, tensor.name.split(".")[-2]
        pieces += tensor_pieces(str(tensor.source.file), tensor.source.offset, plan.shape, plan.dtype,
                                tensor.ggml_type, heads.get(kind, 0), start + offset, tensor.nbytes, chunk_bytes)
    return pieces


def write_gguf(path: Path, kv_data: dict, tensors: list[GGUFTensor], heads: dict[str, int], *, workers: int,
               chunk_bytes: int) -> None:
    """Header, then every tensor's data at its aligned offset; the file is sized first, so padding reads zero."""
    offsets = tensor_offsets([t.nbytes for t in tensors], ALIGNMENT)
    infos = [(t.name, t.source.plan.shape, t.ggml_type, o) for t, o in zip(tensors, offsets, strict=True)]
    header = encode_header(kv_data, infos, ALIGNMENT)
    size = len(header) + (offsets[-1] + pad(tensors[-1].nbytes, ALIGNMENT) if tensors else 0)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        os.ftruncate(fd, size)  # writes inside the file's size are cheaper than appends that grow it
        write_at(fd, header, 0)
        write_pieces(fd, data_pieces(tensors, len(header), heads, chunk_bytes), workers)
    finally:
        os.close(fd)


def export_gguf(
    model_dir: str | os.PathLike,
    output: str | os.PathLike,
    *,
    outtype: str = "auto",
    overwrite: bool = False,
    workers: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Path:
    """Write one of our folders (or a transformers Llama folder) as a llama.cpp GGUF file; returns its path."""
    model_dir, output = Path(model_dir), Path(output)
    if outtype not in OUTTYPE_CHOICES:
        raise ValueError(f"--outtype {outtype!r} is not one of {', '.join(OUTTYPE_CHOICES)}; pick one of those.")
    config = paper_config(read_config(model_dir), model_dir)
    if output.is_dir() or (output.exists() and not overwrite):
        raise FileExistsError(f"{output} already exists; pass --overwrite to replace it or choose another --output.")
    sources = check_tensors(model_dir, config)
    outtype = resolve_outtype(outtype, sources)
    tensors = plan_tensors(sources, outtype)
    kv_data = gguf_metadata(config, model_dir, outtype)
    heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    try:
        write_gguf(temporary, kv_data, tensors, heads, workers=workers or min(4, os.cpu_count() or 1),
                   chunk_bytes=chunk_bytes)
        os.replace(temporary, output)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return output
