"""`llama-paper export-meta`: our Hugging Face folder -> Meta's `consolidated.NN.pth` + `params.json` layout.

The inverse of `convert_meta`: rows of q/k projections go back to Meta's interleaved rotary order, tensors are
split across `--num-shards` model-parallel files along Meta's axes, and `rope.freqs` is written as Meta's
release has it. convert -> export reproduces the original shards tensor for tensor. Each shard file holds
1/N of the model in memory while it is written (torch.save needs the whole dict).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open

from .convert_meta import DTYPES, check_output_dir, publish
from .meta_layout import GLOBAL_KEYS, LAYER_KEYS, ffn_params, meta_key, rope_freqs, shard_name, unpermute_rotary


class SafetensorsFolder:
    """Read tensors by name from a folder of (sharded) safetensors files, one at a time."""

    def __init__(self, folder: Path):
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
        elif (folder / "model.safetensors").is_file():
            with safe_open(folder / "model.safetensors", framework="pt") as handle:
                weight_map = {name: "model.safetensors" for name in handle.keys()}
        else:
            raise FileNotFoundError(
                f"{folder} has no model.safetensors(.index.json); pass a folder saved by our model."
            )
        self.folder, self.weight_map = folder, weight_map
        self.handles = {}

    def __contains__(self, name: str) -> bool:
        return name in self.weight_map

    def get(self, name: str) -> torch.Tensor:
        """The tensor called `name`, or a KeyError naming the folder."""
        if name not in self.weight_map:
            raise KeyError(f"{self.folder} has no tensor {name!r}; is it a LlamaPaperForCausalLM checkpoint?")
        file = self.weight_map[name]
        if file not in self.handles:
            self.handles[file] = safe_open(self.folder / file, framework="pt")
        return self.handles[file].get_tensor(name)


def meta_params(config: dict) -> dict:
    """params.json in Meta's style (vocab_size -1: the tokenizer defines it)."""
    params = {
        "dim": config["hidden_size"],
        "n_heads": config["num_attention_heads"],
        "n_layers": config["num_hidden_layers"],
        "norm_eps": config.get("rms_norm_eps", 1e-6),
        "vocab_size": -1,
    }
    params.update(ffn_params(config["hidden_size"], config["intermediate_size"], config.get("multiple_of", 256)))
    kv = config.get("num_key_value_heads") or config["num_attention_heads"]
    if kv != config["num_attention_heads"]:
        params["n_kv_heads"] = kv
    if float(config.get("rope_theta", 10000.0)) != 10000.0:
        params["rope_theta"] = float(config["rope_theta"])
    return params


def check_divisible(config: dict, num_shards: int) -> None:
    """Each model-parallel rank must get whole heads and equal slices."""
    sizes = {
        "num_attention_heads": config["num_attention_heads"],
        "num_key_value_heads": config.get("num_key_value_heads") or config["num_attention_heads"],
        "intermediate_size": config["intermediate_size"],
        "hidden_size": config["hidden_size"],
        "vocab_size": config["vocab_size"],
    }
    bad = [f"{name}={value}" for name, value in sizes.items() if value % num_shards]
    if num_shards < 1 or bad:
        raise ValueError(f"--num-shards {num_shards} does not divide {', '.join(bad) or 'anything'}; pick a divisor.")


def export_meta_checkpoint(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    num_shards: int = 1,
    dtype: str = "keep",
    overwrite: bool = False,
    write_rope_freqs: bool = True,
) -> Path:
    """Write Meta's layout (consolidated.NN.pth, params.json, tokenizer.model) from one of our folders."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    config_file = input_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{config_file} is missing; --input-dir must be a folder saved by our model or convert-meta."
        )
    config = json.loads(config_file.read_text())
    check_divisible(config, num_shards)
    check_output_dir(output_dir, overwrite, input_dir)
    weights = SafetensorsFolder(input_dir)
    n_heads = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_heads
    head_dim = config["hidden_size"] // n_heads
    cast = (lambda t: t.to(DTYPES[dtype])) if dtype != "keep" else (lambda t: t)  # noqa: E731
    ours_of = {meta: ours for meta, (ours, _) in GLOBAL_KEYS.items()}
    tied = "lm_head.weight" not in weights

    def meta_tensor(layer: int | None, name: str) -> torch.Tensor:
        ours = ours_of[name] if layer is None else f"model.layers.{layer}.{LAYER_KEYS[name][0]}"
        tensor = weights.get(ours)
        if name == "attention.wq.weight":
            tensor = unpermute_rotary(tensor, n_heads)
        elif name == "attention.wk.weight":
            tensor = unpermute_rotary(tensor, n_kv)
        return cast(tensor)

    temporary = output_dir.with_name(f".{output_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        for rank in range(num_shards):
            shard: dict[str, torch.Tensor] = {}
            # Meta's order: embeddings, layers, final norm, output
            entries = [(None, "tok_embeddings.weight")]
            entries += [(i, name) for i in range(config["num_hidden_layers"]) for name in LAYER_KEYS]
            entries += [(None, "norm.weight")] + ([] if tied else [(None, "output.weight")])
            for layer, name in entries:
                axis = GLOBAL_KEYS[name][1] if layer is None else LAYER_KEYS[name][1]
                tensor = meta_tensor(layer, name)
                # clone: torch.save writes a view's whole storage, so each slice gets its own
                shard[meta_key(layer, name)] = (
                    tensor.clone() if axis is None else tensor.chunk(num_shards, axis)[rank].clone()
                )
            if write_rope_freqs:
                shard["rope.freqs"] = rope_freqs(
                    head_dim, float(config.get("rope_theta", 10000.0)), shard["norm.weight"].dtype
                )
            torch.save(shard, temporary / shard_name(rank))
            del shard
        (temporary / "params.json").write_text(json.dumps(meta_params(config)) + "\n")
        if (input_dir / "tokenizer.model").is_file():
            shutil.copyfile(input_dir / "tokenizer.model", temporary / "tokenizer.model")
        publish(temporary, output_dir)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return output_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `llama-paper export-meta`."""
    parser = subparsers.add_parser(
        "export-meta",
        help="export one of our folders to Meta's consolidated.NN.pth layout",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--input-dir", required=True, help="folder saved by our model or convert-meta")
    parser.add_argument("--output-dir", required=True, help="folder to create")
    parser.add_argument("--num-shards", type=int, default=1, help="model-parallel files (Meta: 1/2/4/8 for 7B..65B)")
    parser.add_argument(
        "--dtype", default="keep", choices=["keep", *DTYPES], help="weight dtype (default: the folder's)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in --output-dir")
    parser.add_argument("--no-rope-freqs", action="store_true", help="leave out Meta's unused rope.freqs buffer")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    out = export_meta_checkpoint(
        args.input_dir,
        args.output_dir,
        args.num_shards,
        args.dtype,
        args.overwrite,
        write_rope_freqs=not args.no_rope_freqs,
    )
    print(f"export-meta: wrote {out}")
    return 0
