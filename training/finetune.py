"""`llama-paper finetune`: fine-tune a saved LLaMA folder on a JSONL file with `transformers.Trainer`.

Each line of the data file is one example, either
    {"text": "..."}                              plain language modelling: every token is a target, or
    {"prompt": "...", "response": "..."}         the prompt is context only: its tokens are masked out of the loss.
The training text is exactly `prompt + response` (no separator is added: end the prompt with the space or newline
you want), tokenized as one string with BOS at the start and EOS appended; the tokens whose text starts inside the
prompt are labelled -100. Tokenizing the response on its own would give it SentencePiece's leading "▁" (a space
that is not in the data). An example longer than --max-length is cut at the end (the response loses its tail and
EOS); one whose prompt fills --max-length by itself is skipped with a warning, and an error if none is left.
With `--lora` (needs the `peft` extra) only low-rank adapters on every attention and SwiGLU projection are trained.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch

IGNORE_INDEX = -100  # label value ignored by the causal-LM loss
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_records(path: str | Path) -> list[dict]:
    """Read a JSONL file of {"text"} or {"prompt", "response"} records; bad lines raise naming the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--data {path} does not exist; pass a JSONL file with one example per line.")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number} is not valid JSON ({error.msg}).") from None
        if not isinstance(record, dict) or not (isinstance(record.get("text"), str) or (
                isinstance(record.get("prompt"), str) and isinstance(record.get("response"), str))):
            raise ValueError(f"{path}:{number} needs a string field 'text', or string fields 'prompt' and 'response'.")
        records.append(record)
    if not records:
        raise ValueError(f"{path} holds no examples.")
    return records


def encode_record(record: dict, tokenizer, max_length: int) -> dict[str, list[int]]:
    """input_ids and labels of one example (prompt tokens labelled IGNORE_INDEX), truncated to max_length.

    A {"prompt", "response"} record is tokenized as the single string prompt + response, so the ids are exactly
    the tokenizer's own encoding of the training text; the prompt's tokens are found from the fast tokenizer's
    character offsets (or, for a slow tokenizer, as the prompt's own encoding when it is a prefix of the joint one).
    """
    if "prompt" in record and "response" in record:
        input_ids, prompt_length = _encode_pair(record["prompt"], record["response"], tokenizer)
        input_ids = _with_eos(input_ids, tokenizer)
        labels = [IGNORE_INDEX] * prompt_length + input_ids[prompt_length:]
    else:
        input_ids = _with_eos(tokenizer(record["text"], add_special_tokens=True)["input_ids"], tokenizer)
        labels = list(input_ids)
    return {"input_ids": input_ids[:max_length], "labels": labels[:max_length]}


def _with_eos(input_ids: list[int], tokenizer) -> list[int]:
    """Append EOS unless the tokenizer already added it (add_eos_token=True)."""
    eos = tokenizer.eos_token_id
    return list(input_ids) if input_ids and input_ids[-1] == eos else list(input_ids) + [eos]


def _encode_pair(prompt: str, response: str, tokenizer) -> tuple[list[int], int]:
    """Ids of prompt + response tokenized jointly, and how many leading ids belong to the prompt."""
    text = prompt + response
    if getattr(tokenizer, "is_fast", False):
        encoding = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True,
                             return_special_tokens_mask=True)
        input_ids = encoding["input_ids"]
        # A token belongs to the prompt when its character span starts before len(prompt). The offsets of a
        # "▁x" piece start at its space, and the dummy-prefix "▁" maps to (0, 1). A token straddling the boundary
        # (a piece merging the prompt's last characters with the response's first ones) belongs to the prompt:
        # its text is only partly a target, and the model must see the whole prompt as context.
        # None: a special token the tokenizer added around the text (BOS, EOS), which has no span (0, 0).
        starts = [None if special and end == 0 else start
                  for (start, end), special in zip(encoding["offset_mapping"], encoding["special_tokens_mask"])]
        prompt_length = 0  # leading added tokens (BOS) and the tokens that start inside the prompt
        while prompt_length < len(starts) and (starts[prompt_length] is None or starts[prompt_length] < len(prompt)):
            prompt_length += 1
        if any(start is not None and start < len(prompt) for start in starts[prompt_length:]):
            raise ValueError(f"Tokens of the prompt {prompt!r} follow tokens of the response {response!r} in "
                             "their joint encoding; cannot mask the prompt.")
        return input_ids, prompt_length
    # Slow tokenizer (no offsets): the prompt's own encoding must be a prefix of the joint one, then the rest of the
    # ids spell exactly the response.
    input_ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if getattr(tokenizer, "add_eos_token", False) and prompt_ids[-1:] == [tokenizer.eos_token_id]:
        prompt_ids = prompt_ids[:-1]  # the tokenizer ends every encoding with EOS, the prompt's alone too
    if input_ids[:len(prompt_ids)] != prompt_ids:
        raise ValueError(f"With the slow tokenizer {type(tokenizer).__name__}, a token merges the end of the prompt "
                         f"{prompt!r} with the start of the response {response!r}, so the prompt cannot be masked "
                         "exactly; load the fast tokenizer (AutoTokenizer.from_pretrained gives it), which masks "
                         "by character offsets.")
    return input_ids, len(prompt_ids)


def with_targets(examples: Iterable[dict[str, list[int]]]) -> list[dict[str, list[int]]]:
    """Drop (with a warning) examples left with no target token, i.e. a prompt that fills --max-length by itself.

    They would add nothing to the loss, and a batch of only such examples logs a loss of 0.
    """
    examples = list(examples)
    kept = [e for e in examples if any(label != IGNORE_INDEX for label in e["labels"])]
    if not kept:
        raise ValueError("Every example's prompt fills --max-length, so no response token is left to learn; "
                         "raise --max-length or shorten the prompts.")
    if len(kept) < len(examples):
        warnings.warn(f"Skipped {len(examples) - len(kept)} of {len(examples)} examples whose prompt fills "
                      f"--max-length (no response token left to learn).", UserWarning, stacklevel=2)
    return kept


class PadCollator:
    """Right-pads input_ids (pad id), labels (IGNORE_INDEX) and builds the attention mask."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        """Stack a list of encoded examples into a padded batch."""
        length = max(len(f["input_ids"]) for f in features)
        batch = {"input_ids": [], "labels": [], "attention_mask": []}
        for f in features:
            pad = length - len(f["input_ids"])
            batch["input_ids"].append(f["input_ids"] + [self.pad_token_id] * pad)
            batch["labels"].append(f["labels"] + [IGNORE_INDEX] * pad)
            batch["attention_mask"].append([1] * len(f["input_ids"]) + [0] * pad)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


def apply_lora(model, r: int, alpha: int, dropout: float):
    """Wrap `model` with LoRA adapters (peft); a clear error when peft is not installed."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportError("--lora needs the optional dependency peft: pip install 'llama-paper[peft]'.") from None
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS,
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def check_model_dir(model_dir: str) -> None:
    """A path (not a Hub id) must be a saved model folder; say so instead of transformers' "Repo id must be..."."""
    from modeling_llama.cli import names_a_local_path

    if names_a_local_path(model_dir) and not (Path(model_dir).expanduser() / "config.json").is_file():
        raise FileNotFoundError(f"--model {model_dir}: no saved model there (no config.json); pass a folder written by "
                                "`llama-paper pretrain`, `convert-meta` or `save_pretrained`, or a Hub id.")


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuse to write over a saved model (an earlier fine-tune, or the base model itself) unless told to."""
    held = [name for name in ("config.json", "adapter_config.json") if (Path(output_dir) / name).is_file()]
    if held and not overwrite:
        raise FileExistsError(f"--output-dir {output_dir} already holds a model ({held[0]}); pass --overwrite to "
                              "replace it, or choose another folder.")


def finetune(model_dir: str, data: str, output_dir: str, max_steps: int = -1, epochs: float = 1.0,
             learning_rate: float = 2e-5, batch_size: int = 8, gradient_accumulation_steps: int = 1,
             max_length: int = 512, warmup_steps: int = 0, weight_decay: float = 0.0, seed: int = 0,
             bf16: bool = False, activation_checkpointing: bool = False, lora: bool = False, lora_r: int = 8,
             lora_alpha: int = 16, lora_dropout: float = 0.05, merge_lora: bool = False,
             logging_steps: int = 10, overwrite: bool = False) -> dict:
    """Fine-tune `model_dir` on `data` with transformers.Trainer; saves into output_dir; returns the train metrics."""
    import modeling_llama  # noqa: F401  (registers our classes; saved folders get auto_map)
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    records = load_records(data)
    check_model_dir(model_dir)
    check_output_dir(output_dir, overwrite)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    examples = with_targets(encode_record(r, tokenizer, max_length) for r in records)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if bf16 else torch.float32)
    if lora:
        model = apply_lora(model, lora_r, lora_alpha, lora_dropout)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    args = TrainingArguments(
        output_dir=output_dir, max_steps=max_steps, num_train_epochs=epochs, learning_rate=learning_rate,
        per_device_train_batch_size=batch_size, gradient_accumulation_steps=gradient_accumulation_steps,
        lr_scheduler_type="cosine", warmup_steps=warmup_steps, weight_decay=weight_decay, adam_beta1=0.9,
        adam_beta2=0.95, max_grad_norm=1.0, logging_steps=logging_steps, save_strategy="no", report_to="none",
        use_cpu=not torch.cuda.is_available(), bf16=bf16, seed=seed, dataloader_num_workers=0,
        remove_unused_columns=False, activation_checkpointing=activation_checkpointing,
    )
    trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=PadCollator(pad_id),
                      processing_class=tokenizer)
    result = trainer.train()
    if lora and merge_lora:
        model = trainer.model.merge_and_unload()
        model.save_pretrained(output_dir)
    else:
        trainer.save_model(output_dir)  # full model, or only the adapter under LoRA
    tokenizer.save_pretrained(output_dir)
    write_finetune_card(output_dir, model_dir, data, trainer, adapter=lora and not merge_lora)
    return {**result.metrics, "log_history": trainer.state.log_history}


def write_finetune_card(output_dir: str, model_dir: str, data: str, trainer, adapter: bool) -> None:
    """finetune_summary.json, the loss curve and the model card (base model and relation in its metadata)."""
    from modeling_llama.cli import names_a_local_path
    from publishing.card import published_repo_id, write_card

    from .model_card import LOSS_PLOT, plot_loss_curve

    history = trainer.state.log_history
    losses = [h for h in history if "loss" in h and "step" in h]
    args = trainer.args
    base_id = published_repo_id(model_dir) if names_a_local_path(model_dir) else model_dir
    summary = {"base_model": model_dir, "base_model_id": base_id,
               "data": str(data), "steps": trainer.state.global_step, "adapter": adapter,
               "train_loss": next((h["train_loss"] for h in reversed(history) if "train_loss" in h), None),
               "hyperparameters": {k: getattr(args, k) for k in (
                   "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps",
                   "num_train_epochs", "warmup_steps", "weight_decay", "adam_beta1", "adam_beta2", "max_grad_norm",
                   "lr_scheduler_type", "seed", "bf16")}}
    summary["hyperparameters"]["lr_scheduler_type"] = str(summary["hyperparameters"]["lr_scheduler_type"])
    (Path(output_dir) / "finetune_summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    if losses:
        plot_loss_curve(losses, Path(output_dir) / LOSS_PLOT, title="fine-tuning loss")
    write_card(output_dir, base_model_relation="adapter" if adapter else "finetune")


def register(subparsers) -> None:
    """Add the `finetune` sub-command (entry point `llama_paper.commands`)."""
    parser = subparsers.add_parser("finetune", help="fine-tune a saved model on a JSONL file (transformers.Trainer)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved Hugging Face folder of our model")
    parser.add_argument("--data", required=True, help="JSONL: {'text'} or {'prompt', 'response'} per line")
    parser.add_argument("--output-dir", default="runs/llama-paper-finetune")
    parser.add_argument("--max-steps", type=int, default=-1, help="overrides --epochs when > 0")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--warmup-steps", type=int, default=0)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters only (needs peft)")
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-alpha", type=int, default=16)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument("--merge-lora", action="store_true", help="save the merged model instead of the adapter")
    parser.add_argument("--logging-steps", type=int, default=10)
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in --output-dir")
    parser.add_argument("--push-to-hub", metavar="REPO",
                        help="at the end, upload --output-dir to the Hub as NAMESPACE/NAME (as `llama-paper push`)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    options = {k: v for k, v in vars(args).items() if k not in ("func", "command", "model", "push_to_hub")}
    metrics = finetune(model_dir=args.model, **options)
    print(f"Fine-tuned for {metrics.get('epoch', 0):.2f} epochs, train loss {metrics.get('train_loss', float('nan')):.4f}; "
          f"saved to {args.output_dir}.")
    if args.push_to_hub:
        from publishing.push import push_at_end
        return push_at_end(args.output_dir, args.push_to_hub, command="finetune")
    return 0


__all__ = ["finetune", "load_records", "encode_record", "with_targets", "PadCollator", "apply_lora", "register",
           "IGNORE_INDEX"]
