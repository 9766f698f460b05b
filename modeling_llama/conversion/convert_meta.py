"""`llama-paper convert-meta`: Meta's original LLaMA checkpoint -> our Hugging Face folder, one tensor at a time.

Input: `consolidated.NN.pth` (model-parallel shards) + `params.json`, `tokenizer.model` in the folder or its
parent (Meta's release puts it one level up). Output: config.json, sharded safetensors, both tokenizers,
generation_config.json. Shards are opened with `torch.load(mmap=True, weights_only=True)` and every output
tensor is streamed block by block (`meta_shards.py`), so memory stays flat whatever the model size. The
output appears atomically: a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..configuration_llama_paper import LlamaPaperConfig, swiglu_hidden_size
from .meta_layout import (
    IGNORED_KEYS,
    LAYER_KEYS,
    SHARD_NAME,
    meta_key,
    parse_key,
    rope_freqs,
    shard_name,
)
from .meta_shards import BlockReader, Shard, merged_blocks, open_shard
from .safetensors_stream import (
    FileSlice,
    TensorPlan,
    parse_size,
    plan_shards,
    shard_file_names,
    write_index,
    write_safetensors,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def find_shards(input_dir: Path) -> list[Path]:
    """consolidated.00.pth ... consolidated.NN.pth, checked to be complete."""
    found = {}
    for entry in input_dir.iterdir():
        match = SHARD_NAME.match(entry.name)
        if match:
            found[int(match.group(1))] = entry
    if not found:
        raise FileNotFoundError(
            f"No consolidated.NN.pth shards in {input_dir}. Point --input-dir at the folder of Meta's checkpoint "
            "(the one holding params.json and consolidated.00.pth)."
        )
    missing = [f"consolidated.{i:02d}.pth" for i in range(max(found) + 1) if i not in found]
    if missing:
        raise FileNotFoundError(
            f"{input_dir} lacks {', '.join(missing)}: the checkpoint is incomplete; copy every shard."
        )
    return [found[i] for i in sorted(found)]


def read_params(input_dir: Path) -> dict:
    """params.json as a dict, with a clear error if it is missing or malformed."""
    path = input_dir / "params.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing. Meta's checkpoints ship it next to consolidated.00.pth; copy it there."
        )
    try:
        params = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from None
    if not isinstance(params, dict):
        raise ValueError(f"{path} holds a JSON {type(params).__name__}, not an object like Meta's params.json.")
    for key in ("dim", "n_heads", "n_layers"):
        if key not in params:
            raise ValueError(
                f"{path} has no {key!r}; Meta's params.json always does (dim, n_heads, n_layers, norm_eps)."
            )
    for key, value in params.items():
        types = _INTEGER if key in _INTEGER_FIELDS else _NUMBER if key in _NUMBER_FIELDS else None
        # JSON true/false load as bool, a subclass of int: never a valid size.
        if types and value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            kind = "an integer" if types is _INTEGER else "a number"
            raise ValueError(f"{path}: {key} = {value!r} is not {kind}; restore the params.json shipped with the "
                             "checkpoint.")
    return params


# The params.json fields Meta's releases use (vocab_size is -1 in LLaMA 1: "take it from the tokenizer").
_INTEGER_FIELDS = {"dim", "n_heads", "n_layers", "n_kv_heads", "vocab_size", "multiple_of"}
_NUMBER_FIELDS = {"norm_eps", "rope_theta", "ffn_dim_multiplier"}
_INTEGER, _NUMBER = (int,), (int, float)


def find_tokenizer(input_dir: Path, tokenizer: str | os.PathLike | None) -> Path:
    """tokenizer.model given explicitly, else in the checkpoint folder, else in its parent (Meta's layout)."""
    candidates = (
        [Path(tokenizer)] if tokenizer else [input_dir / "tokenizer.model", input_dir.parent / "tokenizer.model"]
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"tokenizer.model not found (looked at {', '.join(map(str, candidates))}). "
        "Pass --tokenizer PATH/tokenizer.model."
    )


def check_shards(shards: list[Shard]) -> int:
    """Every key known, every shard with the same keys and layers 0..L-1 complete; returns L."""
    first = shards[0]
    for shard in shards:
        for key in shard.tensors:
            if key in IGNORED_KEYS:
                continue
            try:
                parse_key(key)
            except KeyError:
                raise ValueError(
                    f"Unknown key {key!r} in {shard.path.name}: not part of Meta's LLaMA layout "
                    f"(tok_embeddings, norm, output, layers.N.{{{', '.join(LAYER_KEYS)}}}). Is this a LLaMA checkpoint?"
                ) from None
        if set(shard.tensors) - IGNORED_KEYS != set(first.tensors) - IGNORED_KEYS:
            layers = lambda s: sorted({k.split(".")[1] for k in s.tensors if k.startswith("layers.")}, key=int)  # noqa: E731
            raise ValueError(
                f"{shard.path.name} and {first.path.name} hold different tensors (layers {_span(layers(shard))} vs "
                f"{_span(layers(first))}): shards of different checkpoints. Use the shards of one model only."
            )
    layers = sorted({parse_key(k)[0] for k in first.tensors if k not in IGNORED_KEYS} - {None})
    if layers != list(range(len(layers))):
        raise ValueError(
            f"{first.path.name} has layers {layers}, not 0..{len(layers) - 1}: the checkpoint is incomplete."
        )
    for layer in layers:
        for name in LAYER_KEYS:
            if meta_key(layer, name) not in first.tensors:
                raise ValueError(f"{first.path.name} lacks {meta_key(layer, name)}: the checkpoint is incomplete.")
    for name in ("tok_embeddings.weight", "norm.weight"):
        if name not in first.tensors:
            raise ValueError(f"{first.path.name} lacks {name}: the checkpoint is incomplete.")
    return len(layers)


def _span(items: list[str]) -> str:
    return f"{items[0]}-{items[-1]}" if items else "none"


def merged_shape(shards: list[Shard], key: str, dim: int | None) -> tuple[int, ...]:
    """Shape after merging the shards along `dim` (replicated tensors must agree exactly)."""
    shapes = [tuple(s.tensors[key].shape) for s in shards]
    if any(shape != shapes[0] for shape in shapes):
        raise ValueError(f"{key} has different shapes across shards ({shapes}): shards of different checkpoints.")
    if dim is None:
        return shapes[0]
    return tuple(size * len(shards) if axis == dim else size for axis, size in enumerate(shapes[0]))


def check_shard_count(shards: list[Shard], dim: int) -> None:
    """Name the last shards missing: find_shards sees gaps only, and every rank holds dim / N embedding columns."""
    width = shards[0].tensors["tok_embeddings.weight"].shape[1]
    count = dim // width if dim % width == 0 else 0
    if count > len(shards):
        missing = ", ".join(shard_name(rank) for rank in range(len(shards), count))
        raise FileNotFoundError(
            f"{shards[0].path.parent} lacks {missing}: params.json says dim = {dim} and each shard holds {width} "
            f"columns of tok_embeddings, so the checkpoint has {count} shards. Copy every shard."
        )


def infer_config(shards: list[Shard], params: dict, n_layers: int) -> LlamaPaperConfig:
    """Every size from the tensors, cross-checked against params.json."""
    shape = lambda key: merged_shape(shards, key, parse_key(key)[2])  # noqa: E731
    vocab, dim = shape("tok_embeddings.weight")
    n_heads = params["n_heads"]

    def expect(what: str, found, wanted, hint: str = "") -> None:
        if found != wanted:
            raise ValueError(
                f"params.json says {what} = {wanted}, but the tensors give {found}{hint}. "
                "params.json and the shards belong to different models; use the params.json shipped with them."
            )

    expect("n_layers", n_layers, params["n_layers"])
    check_shard_count(shards, params["dim"])
    expect("dim", dim, params["dim"])
    if dim % n_heads or (dim // n_heads) % 2:
        raise ValueError(f"params.json n_heads = {n_heads} does not split dim = {dim} into heads of even width.")
    head_dim = dim // n_heads
    expect("the wq shape", shape("layers.0.attention.wq.weight"), (dim, dim))
    kv_rows = shape("layers.0.attention.wk.weight")[0]
    n_kv = params.get("n_kv_heads") or kv_rows // head_dim
    expect("n_kv_heads * head_dim", kv_rows, n_kv * head_dim, " (wk rows)")
    hidden = shape("layers.0.feed_forward.w1.weight")[0]
    if params.get("multiple_of"):
        wanted = swiglu_hidden_size(dim, params["multiple_of"], params.get("ffn_dim_multiplier"))
        expect("the feed-forward width (from multiple_of, ffn_dim_multiplier)", hidden, wanted)
    if params.get("vocab_size", -1) not in (-1, None):
        expect("vocab_size", vocab, params["vocab_size"])
    for layer in range(n_layers):
        for name, (_, dim_axis) in LAYER_KEYS.items():
            key = meta_key(layer, name)
            wanted = {
                "attention.wq.weight": (dim, dim),
                "attention.wk.weight": (kv_rows, dim),
                "attention.wv.weight": (kv_rows, dim),
                "attention.wo.weight": (dim, dim),
                "feed_forward.w1.weight": (hidden, dim),
                "feed_forward.w3.weight": (hidden, dim),
                "feed_forward.w2.weight": (dim, hidden),
            }.get(name, (dim,))
            expect(f"the shape of {key}", merged_shape(shards, key, dim_axis), wanted)
    if "output.weight" in shards[0].tensors:
        expect("the shape of output.weight", shape("output.weight"), (vocab, dim))
    expect("the shape of norm.weight", shape("norm.weight"), (dim,))
    theta = float(params.get("rope_theta", 10000.0))
    if "rope.freqs" in shards[0].tensors:  # Meta's saved rotary frequencies also pin down head_dim and theta
        freqs = shards[0].tensors["rope.freqs"].float().flatten()
        expect("head_dim / 2 (from dim / n_heads)", freqs.numel(), head_dim // 2, " (rope.freqs)")
        if not torch.allclose(freqs, rope_freqs(head_dim, theta, torch.float32), rtol=1e-2):
            found = float(freqs[1]) ** (-head_dim / 2) if freqs.numel() > 1 else theta
            expect("rope_theta", round(found), theta, " (from rope.freqs)")
    if not params.get("norm_eps", 1e-6) > 0:
        raise ValueError(f"params.json norm_eps = {params.get('norm_eps')!r} must be positive.")
    return LlamaPaperConfig(
        vocab_size=vocab,
        hidden_size=dim,
        intermediate_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        max_position_embeddings=params.get("max_seq_len", 2048),
        rms_norm_eps=params.get("norm_eps", 1e-6),
        rope_theta=theta,
        tie_word_embeddings="output.weight" not in shards[0].tensors,
        multiple_of=params.get("multiple_of", 256),
    )


def check_output_dir(output_dir: Path, overwrite: bool, input_dir: Path | None = None) -> None:
    """Refuse to mix a new model with an old one or with unrelated files, or to replace the input."""
    if input_dir is not None and input_dir.resolve().is_relative_to(output_dir.resolve()):
        # publish() would delete the old output folder, and with it the checkpoint just read.
        raise FileExistsError(
            f"--output-dir {output_dir} is or contains --input-dir {input_dir}; replacing it would delete the "
            "input. Choose another --output-dir."
        )
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise FileExistsError(f"{output_dir} exists and is not a folder; choose another --output-dir.")
    contents = list(output_dir.iterdir())
    holds_model = any(p.name == "config.json" or p.suffix in (".safetensors", ".pth", ".bin") for p in contents)
    if holds_model and not overwrite:
        raise FileExistsError(
            f"{output_dir} already holds a model; pass --overwrite to replace it or pick another folder."
        )
    if contents and not holds_model:
        raise FileExistsError(f"{output_dir} is not empty (and holds no model); choose an empty or new --output-dir.")


def publish(temporary: Path, output_dir: Path) -> None:
    """Move the finished temporary folder into place (replacing an old model only at the very end)."""
    old = None
    if output_dir.exists():
        old = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}")
        output_dir.rename(old)
    temporary.rename(output_dir)
    if old is not None:
        shutil.rmtree(old)


def convert_meta_checkpoint(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    dtype: str = "keep",
    max_shard_size: str | int = "5GB",
    tokenizer: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert Meta's `consolidated.NN.pth` + `params.json` into a LlamaPaperForCausalLM folder; returns it."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if dtype != "keep" and dtype not in DTYPES:
        raise ValueError(f"dtype must be keep, {', '.join(DTYPES)}; got {dtype!r}.")
    if not input_dir.is_dir():
        raise FileNotFoundError(f"{input_dir} is not a folder; pass Meta's checkpoint folder as --input-dir.")
    params = read_params(input_dir)
    shard_paths = find_shards(input_dir)
    tokenizer_path = find_tokenizer(input_dir, tokenizer)
    check_output_dir(output_dir, overwrite, input_dir)
    shards: list[Shard] = []
    try:
        for path in shard_paths:
            shards.append(open_shard(path))
        config = infer_config(shards, params, check_shards(shards))
        check_tokenizer(tokenizer_path, config.vocab_size)
        plans = output_plans(shards, config, dtype)
        write_folder(shards, config, plans, tokenizer_path, output_dir, parse_size(max_shard_size), progress)
    finally:
        for shard in shards:
            shard.close()
    return output_dir


def output_plans(shards: list[Shard], config: LlamaPaperConfig, dtype: str) -> list[TensorPlan]:
    """Our tensors in file order (embeddings, layers, norm, head), with merged shapes and target dtypes."""
    order = (
        ["tok_embeddings.weight"]
        + [meta_key(i, name) for i in range(config.num_hidden_layers) for name in LAYER_KEYS]
        + ["norm.weight"]
        + (["output.weight"] if "output.weight" in shards[0].tensors else [])
    )
    plans = []
    for key in order:
        _, ours, axis = parse_key(key)
        plans.append(TensorPlan(ours, merged_shape(shards, key, axis), DTYPES.get(dtype, shards[0].tensors[key].dtype)))
    return plans


def write_folder(
    shards: list[Shard],
    config: LlamaPaperConfig,
    plans: list[TensorPlan],
    tokenizer_path: Path,
    output_dir: Path,
    max_shard_bytes: int,
    progress: bool,
) -> None:
    """Write the safetensors shards block by block, then config and tokenizers, into place atomically."""
    sources = {parse_key(key)[1]: key for key in shards[0].tensors if key not in IGNORED_KEYS}  # ours -> Meta's
    reader = BlockReader()
    done = 0

    def produce(plan: TensorPlan) -> Iterator[torch.Tensor | FileSlice]:
        key = sources[plan.name]
        axis = parse_key(key)[2]
        if axis is None:  # replicated: every rank must hold the same values
            for shard in shards[1:]:
                if not torch.equal(shard.tensors[key], shards[0].tensors[key]):
                    raise ValueError(
                        f"{key} differs between {shards[0].path.name} and {shard.path.name}: "
                        "shards of different checkpoints."
                    )
        heads = {"wq": config.num_attention_heads, "wk": config.num_key_value_heads}.get(key.split(".")[-2])
        return merged_blocks(shards, key, axis, plan.dtype, heads, reader)

    def written(plan: TensorPlan) -> None:
        nonlocal done
        done += 1
        if progress and (done % len(LAYER_KEYS) == 1 or done == len(plans)):
            print(f"convert-meta: {done}/{len(plans)} tensors ({plan.name})", file=sys.stderr, flush=True)

    groups = plan_shards(plans, max_shard_bytes)
    names = shard_file_names(len(groups))
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    temporary = output_dir.with_name(f".{output_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    threads = torch.get_num_threads()
    # The block copies are memory-bound; OpenMP workers only add barriers (10x slower on a loaded machine).
    torch.set_num_threads(1)
    # The tokenizer conversion (Python) runs while the tensor copies (system calls, GIL released) do.
    background = ThreadPoolExecutor(max_workers=1)
    tokenizer_done = background.submit(save_tokenizer, tokenizer_path, temporary)
    try:
        for group, name in zip(groups, names, strict=True):
            write_safetensors(temporary / name, group, produce, {"format": "pt"}, written)
        write_index(temporary, groups, names)
        save_model_metadata(config, plans[0].dtype, temporary)
        tokenizer_done.result()
        publish(temporary, output_dir)
    except BaseException:
        background.shutdown(wait=True)
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    finally:
        background.shutdown(wait=True)
        torch.set_num_threads(threads)


def save_model_metadata(config: LlamaPaperConfig, dtype: torch.dtype, folder: Path) -> None:
    """config.json (+ our code for remote loading) and generation_config.json."""
    from transformers import GenerationConfig
    from transformers.dynamic_module_utils import custom_object_save

    from ..modeling_llama_paper import LlamaPaperForCausalLM

    config.dtype = str(dtype).removeprefix("torch.")
    config.architectures = ["LlamaPaperForCausalLM"]
    if LlamaPaperForCausalLM._auto_class is not None:  # as model.save_pretrained does: copy our code, fill auto_map
        with torch.device("meta"):
            skeleton = LlamaPaperForCausalLM(config)
        custom_object_save(skeleton, folder, config=config)
    config.save_pretrained(folder)
    GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id).save_pretrained(folder)


def save_tokenizer(tokenizer_path: Path, folder: Path) -> None:
    """tokenizer.model, the exact tokenizer.json (where one exists) and tokenizer_config.json.

    Any SentencePiece model converts: the slow tokenizer runs SentencePiece itself and is always exact; a model
    that no `tokenizers` pipeline reproduces (e.g. Unigram) gets the slow tokenizer only, with one warning.
    """
    from ..sentencepiece_bpe import exact_fast_problems, read_sentencepiece_model
    from ..tokenization_llama_paper import LlamaPaperTokenizer
    from ..tokenization_llama_paper_fast import LlamaPaperTokenizerFast

    problems = exact_fast_problems(read_sentencepiece_model(tokenizer_path))
    if problems:
        warnings.warn(
            f"{tokenizer_path}: no exact fast tokenizer for this SentencePiece model ({'; '.join(problems)}); the "
            "output folder gets the slow LlamaPaperTokenizer only (exact, runs SentencePiece). The weights are "
            "converted as usual.",
            stacklevel=1,  # (runs in a worker thread: point at this line, not at concurrent.futures)
        )
        LlamaPaperTokenizer(vocab_file=str(tokenizer_path)).save_pretrained(folder)
    else:
        LlamaPaperTokenizerFast(vocab_file=str(tokenizer_path)).save_pretrained(folder)


def check_tokenizer(tokenizer_path: Path, vocab_size: int) -> None:
    """The tokenizer must have one piece per embedding row."""
    from ..tokenization_llama_paper import load_sentencepiece

    pieces = load_sentencepiece(tokenizer_path).get_piece_size()
    if pieces != vocab_size:
        raise ValueError(
            f"{tokenizer_path} has {pieces} pieces but the embedding has {vocab_size} rows: wrong tokenizer for this "
            "checkpoint. Pass the tokenizer.model released with it (--tokenizer)."
        )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `llama-paper convert-meta`."""
    parser = subparsers.add_parser(
        "convert-meta",
        help="convert Meta's consolidated.NN.pth checkpoint to a Hugging Face folder",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--input-dir", required=True, help="folder with params.json and consolidated.NN.pth")
    parser.add_argument("--output-dir", required=True, help="folder to create")
    parser.add_argument(
        "--dtype", default="keep", choices=["keep", *DTYPES], help="weight dtype (default: the source's)"
    )
    parser.add_argument("--max-shard-size", default="5GB", help="largest safetensors file, e.g. 5GB or 500MB")
    parser.add_argument("--tokenizer", default=None, help="tokenizer.model (default: in --input-dir or its parent)")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in --output-dir")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    out = convert_meta_checkpoint(
        args.input_dir,
        args.output_dir,
        args.dtype,
        args.max_shard_size,
        args.tokenizer,
        args.overwrite,
        progress=not args.quiet,
    )
    print(f"convert-meta: wrote {out}")
    return 0
