"""Our folders <-> transformers-native Llama folders (`model_type: llama`, `LlamaForCausalLM`, no remote code).

The tensor names are the same on both sides (our model mirrors transformers' Llama), so a conversion rewrites
config and tokenizer files and copies every tensor's bytes unchanged: one tensor at a time, by the kernel
(`copy_file_range`, as `cp` does), after checking its name, shape and dtype. Outputs appear atomically.

The native tokenizer is our exact `tokenizer.json` with a `tokenizer_config.json` naming `PreTrainedTokenizerFast`
and `split_special_tokens: true`: transformers' `LlamaTokenizer` would rebuild a Metaspace pipeline that differs
from SentencePiece on leading spaces (see shared notes, hub-and-interop §4).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from ..configuration_llama_paper import LlamaPaperConfig
from .convert_meta import check_output_dir, publish, save_model_metadata
from .safetensors_stream import (
    DTYPE_NAMES,
    FileSlice,
    TensorPlan,
    parse_size,
    plan_shards,
    shard_file_names,
    write_index,
    write_safetensors,
)

TORCH_DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}
# Buffers some older transformers versions saved; recomputed by both models.
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")


@dataclass(frozen=True)
class SourceTensor:
    """Where one tensor's bytes lie in a source safetensors file."""

    file: Path
    offset: int
    plan: TensorPlan


def read_config(folder: Path) -> dict:
    """config.json of a model folder, with a clear error when the folder or the file is missing."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; pass a saved model folder (one holding config.json).")
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; pass a folder written by save_pretrained.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); restore the folder's config.json.") from None


def read_header(path: Path) -> tuple[int, dict]:
    """(offset of the data, header) of a safetensors file, reading only the header."""
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        try:
            header = json.loads(handle.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"{path} is not a safetensors file (unreadable header); re-save the model.") from None
    return 8 + size, header


def source_tensors(folder: Path) -> dict[str, SourceTensor]:
    """Every tensor of a folder's (sharded) safetensors files, by name, from their headers."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        found = ", ".join(p.name for p in folder.glob("*.bin")) or "no weights"
        raise FileNotFoundError(
            f"{folder} has no model.safetensors(.index.json) ({found}). Re-save it with safetensors: "
            "AutoModelForCausalLM.from_pretrained(folder).save_pretrained(new_folder)."
        )
    tensors = {}
    for name in files:
        start, header = read_header(folder / name)
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            if entry["dtype"] not in TORCH_DTYPES:
                raise ValueError(f"{folder / name}: {key} has dtype {entry['dtype']}, not a float type of ours.")
            plan = TensorPlan(key, tuple(entry["shape"]), TORCH_DTYPES[entry["dtype"]])
            tensors[key] = SourceTensor(folder / name, start + entry["data_offsets"][0], plan)
    return tensors


def expected_shapes(config: LlamaPaperConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of LlamaForCausalLM / LlamaPaperForCausalLM, in file order."""
    d, ffn, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    kv = config.num_key_value_heads * config.head_dim
    shapes = {"model.embed_tokens.weight": (vocab, d)}
    for i in range(config.num_hidden_layers):
        prefix = f"model.layers.{i}."
        shapes.update({
            prefix + "self_attn.q_proj.weight": (d, d),
            prefix + "self_attn.k_proj.weight": (kv, d),
            prefix + "self_attn.v_proj.weight": (kv, d),
            prefix + "self_attn.o_proj.weight": (d, d),
            prefix + "mlp.gate_proj.weight": (ffn, d),
            prefix + "mlp.up_proj.weight": (ffn, d),
            prefix + "mlp.down_proj.weight": (d, ffn),
            prefix + "input_layernorm.weight": (d,),
            prefix + "post_attention_layernorm.weight": (d,),
        })
    shapes["model.norm.weight"] = (d,)
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (vocab, d)
    return shapes


def check_tensors(folder: Path, config: LlamaPaperConfig) -> list[SourceTensor]:
    """The folder's tensors in file order, each present once with the shape the config implies."""
    found = source_tensors(folder)
    wanted = expected_shapes(config)
    if config.tie_word_embeddings:  # some writers keep the tied head anyway: it equals the embedding
        found.pop("lm_head.weight", None)
    unknown = [n for n in found if n not in wanted and not n.endswith(IGNORED_SUFFIXES)]
    missing = [n for n in wanted if n not in found]
    if unknown or missing:
        raise ValueError(
            f"{folder} does not hold a LLaMA model of its config.json: "
            + (f"unexpected tensors {unknown[:3]}{'...' if len(unknown) > 3 else ''} " if unknown else "")
            + (f"missing tensors {missing[:3]}{'...' if len(missing) > 3 else ''}" if missing else "")
            + ". Is config.json the one saved with these weights?"
        )
    for name, shape in wanted.items():
        if found[name].plan.shape != shape:
            raise ValueError(
                f"{name} has shape {found[name].plan.shape} but config.json implies {shape}; "
                "config.json and the weights belong to different models."
            )
    return [found[name] for name in wanted]


def copy_tensors(sources: list[SourceTensor], folder: Path, max_shard_size: str | int = "5GB") -> None:
    """Write the tensors into `folder` as (sharded) safetensors, each tensor's bytes copied by the kernel."""
    plans = [source.plan for source in sources]
    by_name = {source.plan.name: source for source in sources}
    handles: dict[Path, int] = {}

    def produce(plan: TensorPlan) -> Iterator[FileSlice]:
        source = by_name[plan.name]
        if source.file not in handles:
            handles[source.file] = os.open(source.file, os.O_RDONLY)
        yield FileSlice(handles[source.file], source.offset, plan.nbytes)

    groups = plan_shards(plans, parse_size(max_shard_size))
    names = shard_file_names(len(groups))
    try:
        for group, name in zip(groups, names, strict=True):
            write_safetensors(folder / name, group, produce, {"format": "pt"})
        write_index(folder, groups, names)
    finally:
        for fd in handles.values():
            os.close(fd)


def native_config(config: LlamaPaperConfig, dtype: torch.dtype):
    """transformers' LlamaConfig with the same function as `config` (v5: rope_theta lives in rope_parameters)."""
    from transformers import LlamaConfig

    native = LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=config.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": float(config.rope_theta)},
        tie_word_embeddings=config.tie_word_embeddings,
        initializer_range=config.initializer_range,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        head_dim=config.head_dim,
    )
    native.architectures = ["LlamaForCausalLM"]
    native.dtype = str(dtype).removeprefix("torch.")
    return native


def paper_config(config_dict: dict, folder: Path) -> LlamaPaperConfig:
    """LlamaPaperConfig of a `model_type: llama` or `llama_paper` config.json (refusing what LLaMA lacks)."""
    model_type = config_dict.get("model_type")
    if model_type not in ("llama", "llama_paper"):
        raise ValueError(
            f"{folder}/config.json has model_type {model_type!r}; only LLaMA-architecture folders (model_type "
            "'llama' or 'llama_paper') convert. Pass a Llama folder."
        )
    keep = {k: v for k, v in config_dict.items() if k not in ("architectures", "auto_map", "transformers_version")}
    try:
        return LlamaPaperConfig.from_dict(keep)
    except ValueError as error:
        raise ValueError(f"{folder}: {error}") from None


def save_native_tokenizer(model_dir: Path, folder: Path, max_length: int) -> None:
    """tokenizer.json (our exact pipeline), a tokenizer_config.json that keeps it exact, tokenizer.model."""
    from ..tokenization_llama_paper_fast import LlamaPaperTokenizerFast

    if not (model_dir / "tokenizer.json").is_file() and not (model_dir / "tokenizer.model").is_file():
        print(f"export: {model_dir} has no tokenizer; the export has none either.", file=sys.stderr)
        return
    tokenizer = LlamaPaperTokenizerFast.from_pretrained(model_dir)
    tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    settings = {
        "tokenizer_class": "PreTrainedTokenizerFast",  # keeps tokenizer.json as it is; "LlamaTokenizer" rebuilds it
        "bos_token": tokenizer.bos_token,
        "eos_token": tokenizer.eos_token,
        "unk_token": tokenizer.unk_token,
        "add_bos_token": tokenizer.add_bos_token,
        "add_eos_token": tokenizer.add_eos_token,
        "split_special_tokens": True,  # "<s>" in text is text, as SentencePiece reads it
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length,
        "padding_side": "left",
    }
    if tokenizer.pad_token is not None:
        settings["pad_token"] = tokenizer.pad_token
    (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n")
    if (model_dir / "tokenizer.model").is_file():
        shutil.copyfile(model_dir / "tokenizer.model", folder / "tokenizer.model")


def write_generation_config(model_dir: Path, config: LlamaPaperConfig, folder: Path) -> None:
    """The source's generation_config.json, else one with the config's BOS/EOS."""
    from transformers import GenerationConfig

    if (model_dir / "generation_config.json").is_file():
        shutil.copyfile(model_dir / "generation_config.json", folder / "generation_config.json")
    else:
        GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id).save_pretrained(folder)


def in_temporary(output_dir: Path, write) -> Path:
    """Run `write(temporary_folder)`, then move the folder into place; a failure leaves nothing behind."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    temporary = output_dir.with_name(f".{output_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        write(temporary)
        publish(temporary, output_dir)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return output_dir


def export_llama(model_dir: str | os.PathLike, output_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a transformers-native Llama folder (no remote code) from one of our model folders; returns it."""
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    config_dict = read_config(model_dir)
    config = paper_config(config_dict, model_dir)
    check_output_dir(output_dir, overwrite, model_dir)
    sources = check_tensors(model_dir, config)

    def write(folder: Path) -> None:
        # The tokenizer (Python) is built while the tensor copies (system calls, GIL released) run.
        with ThreadPoolExecutor(max_workers=1) as background:
            tokenizer = background.submit(save_native_tokenizer, model_dir, folder, config.max_position_embeddings)
            copy_tensors(sources, folder)
            native_config(config, sources[0].plan.dtype).save_pretrained(folder)
            write_generation_config(model_dir, config, folder)
            tokenizer.result()

    return in_temporary(output_dir, write)


def import_llama(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    tokenizer: str | os.PathLike | None = None,
) -> Path:
    """Write one of our folders (LlamaPaperForCausalLM + remote code) from any transformers Llama folder."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    config = paper_config(read_config(input_dir), input_dir)
    check_output_dir(output_dir, overwrite, input_dir)
    sources = check_tensors(input_dir, config)
    tokenizer_model = Path(tokenizer) if tokenizer else input_dir / "tokenizer.model"
    if tokenizer and not tokenizer_model.is_file():
        raise FileNotFoundError(f"--tokenizer {tokenizer} is not a file; pass the model's tokenizer.model.")

    def write(folder: Path) -> None:
        copy_tensors(sources, folder)
        save_model_metadata(config, sources[0].plan.dtype, folder)  # config.json, auto_map + our sources
        write_generation_config(input_dir, config, folder)
        save_imported_tokenizer(input_dir, tokenizer_model, folder)

    return in_temporary(output_dir, write)


def save_imported_tokenizer(input_dir: Path, tokenizer_model: Path, folder: Path) -> None:
    """Our tokenizers from tokenizer.model (keeping the source's add_bos/add_eos), else the source's files."""
    from ..tokenization_llama_paper_fast import LlamaPaperTokenizerFast

    if tokenizer_model.is_file():
        source = input_dir / "tokenizer_config.json"
        settings = json.loads(source.read_text()) if source.is_file() else {}
        flags = {k: settings[k] for k in ("add_bos_token", "add_eos_token") if isinstance(settings.get(k), bool)}
        LlamaPaperTokenizerFast(vocab_file=str(tokenizer_model), **flags).save_pretrained(folder)
        return
    print(
        f"import-hf: {input_dir} has no tokenizer.model, so our SentencePiece tokenizers cannot be built; its "
        "tokenizer files are copied as they are (pass --tokenizer PATH/tokenizer.model to build ours).",
        file=sys.stderr,
    )
    for name in TOKENIZER_FILES:
        if (input_dir / name).is_file():
            shutil.copyfile(input_dir / name, folder / name)
