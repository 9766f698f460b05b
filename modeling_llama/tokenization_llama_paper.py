"""LlamaPaperTokenizer: the LLaMA SentencePiece tokenizer as a slow `PreTrainedTokenizer`, identical to SentencePiece.

Meta's reference encodes `[bos] + sp.encode(text)` (EOS only on request) and decodes with `sp.decode`
(PAPER.md §2). This class does exactly that. Text is text: by default `"<s>"` typed in a string is encoded
as characters, like SentencePiece does (`split_special_tokens=True`); special tokens come from
`add_bos_token`/`add_eos_token` or from ids. With `split_special_tokens=False`, special-token strings are
matched and every chunk between them is encoded by SentencePiece on its own.

This file is copied next to saved checkpoints (remote code): only relative sibling imports.
"""

from __future__ import annotations

import json
import os
from shutil import copyfile

import sentencepiece as spm
from transformers import AddedToken, PreTrainedTokenizer

from .hub_push import KeepCardPushMixin, file_times, pop_hub_kwargs
from .sentencepiece_bpe import bos_eos_template, build_backend, special_tokens_flags_from_json

VOCAB_FILES_NAMES = {"vocab_file": "tokenizer.model"}
FAST_CLASS = "LlamaPaperTokenizerFast"
SLOW_CLASS = "LlamaPaperTokenizer"


def load_sentencepiece(vocab_file: str | os.PathLike | None) -> spm.SentencePieceProcessor:
    """Load a SentencePiece model, with an error naming the file and the fix."""
    if vocab_file is None or not os.path.isfile(vocab_file):
        raise FileNotFoundError(
            f"SentencePiece model not found: {vocab_file}. Pass vocab_file='path/to/tokenizer.model' or a folder "
            "that contains tokenizer.model."
        )
    processor = spm.SentencePieceProcessor()
    try:
        processor.Load(os.fspath(vocab_file))
    except (OSError, RuntimeError) as error:
        raise ValueError(
            f"{vocab_file} is not a SentencePiece model ({error}); expected a `tokenizer.model`."
        ) from None
    return processor


def special_token(processor: spm.SentencePieceProcessor, piece_id: int) -> AddedToken | None:
    """AddedToken for a SentencePiece special id (-1: the model has none); matched literally, never stripped."""
    if piece_id < 0:
        return None
    return AddedToken(processor.id_to_piece(piece_id), special=True, normalized=False, lstrip=False, rstrip=False)


def bos_eos_pairs(tokenizer) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """(bos text, id) if the tokenizer adds BOS, and the same for EOS; None where it does not."""
    bos = (
        (str(tokenizer.bos_token), tokenizer.bos_token_id) if tokenizer.add_bos_token and tokenizer.bos_token else None
    )
    eos = (
        (str(tokenizer.eos_token), tokenizer.eos_token_id) if tokenizer.add_eos_token and tokenizer.eos_token else None
    )
    return bos, eos


def finish_saved_config(tokenizer, save_directory: str, filename_prefix: str | None = None) -> None:
    """Rewrite the saved tokenizer_config.json so options and Auto classes survive a reload.

    transformers never saves `add_bos_token`/`add_eos_token`, and records the slow class name; we record both
    flags, name the fast class (so `AutoTokenizer` returns it from a folder saved by either class) and point
    `auto_map` at both classes for `trust_remote_code`.
    """
    path = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + "tokenizer_config.json")
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    config["add_bos_token"] = bool(tokenizer.add_bos_token)
    config["add_eos_token"] = bool(tokenizer.add_eos_token)
    # A SentencePiece model that no `tokenizers` pipeline reproduces gets no tokenizer.json: the slow class only.
    prefix = filename_prefix + "-" if filename_prefix else ""
    has_fast = os.path.isfile(os.path.join(save_directory, prefix + "tokenizer.json"))
    config["tokenizer_class"] = FAST_CLASS if has_fast else SLOW_CLASS
    # With the special tokens listed here, loading does not parse the whole tokenizer.json to find them.
    config["added_tokens_decoder"] = {str(i): t.__getstate__() for i, t in tokenizer.added_tokens_decoder.items()}
    if "auto_map" in config:
        config["auto_map"]["AutoTokenizer"] = [
            "tokenization_llama_paper.LlamaPaperTokenizer",
            "tokenization_llama_paper_fast.LlamaPaperTokenizerFast" if has_fast else None,
        ]
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(temporary, path)


class LlamaPaperTokenizer(KeepCardPushMixin, PreTrainedTokenizer):
    """Slow LLaMA tokenizer: `input_ids == [bos] + sp.encode(text)`, `decode == sp.decode` (special tokens skipped)."""

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "left"  # batched generation with a decoder-only model pads on the left

    def __init__(
        self,
        vocab_file: str | None = None,
        unk_token: str | AddedToken | None = None,
        bos_token: str | AddedToken | None = None,
        eos_token: str | AddedToken | None = None,
        pad_token: str | AddedToken | None = None,
        add_bos_token: bool | None = None,
        add_eos_token: bool | None = None,
        split_special_tokens: bool = True,
        **kwargs,
    ) -> None:
        # The SentencePiece model must exist before the base __init__, which asks for the vocabulary.
        self.vocab_file = vocab_file
        self.sp_model = load_sentencepiece(vocab_file)
        tokenizer_file = kwargs.pop("tokenizer_file", None)
        if add_bos_token is None or add_eos_token is None:
            flags = special_tokens_flags_from_json(tokenizer_file) if tokenizer_file else None
            add_bos_token = (flags[0] if flags else True) if add_bos_token is None else add_bos_token
            add_eos_token = (flags[1] if flags else False) if add_eos_token is None else add_eos_token
        self.add_bos_token, self.add_eos_token = bool(add_bos_token), bool(add_eos_token)
        sp = self.sp_model
        unk_token = unk_token if unk_token is not None else special_token(sp, sp.unk_id())
        bos_token = bos_token if bos_token is not None else special_token(sp, sp.bos_id())
        eos_token = eos_token if eos_token is not None else special_token(sp, sp.eos_id())
        if pad_token is None and sp.pad_id() >= 0:
            pad_token = special_token(sp, sp.pad_id())
        # Special tokens keep their SentencePiece ids, so register them before the base class appends new ones.
        self._added_tokens_decoder = {}
        for token in (unk_token, bos_token, eos_token, pad_token):
            index = sp.piece_to_id(str(token)) if token is not None else sp.unk_id()
            if token is not None and (index != sp.unk_id() or str(token) == sp.id_to_piece(index)):
                self._added_tokens_decoder[index] = token if isinstance(token, AddedToken) else special_token(sp, index)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(
            unk_token=unk_token,
            bos_token=bos_token,
            eos_token=eos_token,
            pad_token=pad_token,
            add_bos_token=self.add_bos_token,
            add_eos_token=self.add_eos_token,
            split_special_tokens=split_special_tokens,
            **kwargs,
        )

    @property
    def vocab_size(self) -> int:
        """Number of SentencePiece pieces (32000 for LLaMA)."""
        return self.sp_model.get_piece_size()

    def get_vocab(self) -> dict[str, int]:
        """Piece -> id for every piece, plus added tokens."""
        vocab = {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return self.sp_model.encode(text, out_type=str)

    def _convert_token_to_id(self, token: str) -> int:
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index: int) -> str:
        return self.sp_model.id_to_piece(index)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Pieces -> text with SentencePiece's decoder."""
        return self._decode(self.convert_tokens_to_ids(tokens))

    def _decode(
        self,
        token_ids: int | list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs,
    ) -> str:
        ids = [token_ids] if isinstance(token_ids, int) else [int(i) for i in token_ids]
        # <s>, </s> and tokens added later are emitted as their text. <unk> stands for text that was there, so,
        # as in sp.decode, it is never skipped and prints as the model's unk surface (" ⁇ ").
        added = dict(self.added_tokens_decoder)
        added.pop(self.sp_model.unk_id(), None)
        if skip_special_tokens:
            ids = [i for i in ids if not (i in added and added[i].special)]
        # Runs of ordinary ids go through sp.decode. sp.decode drops the dummy-prefix space at the start of its
        # input; only the start of the whole text has one, so a run after a kept special token gets it back
        # (the fast tokenizer's decoder strips one leading space of the whole string, same result).
        text, run = [], []

        def flush() -> None:
            if run:
                piece = self.sp_model.id_to_piece(run[0])
                lead = " " if text and piece.startswith("\u2581") else ""
                text.append(lead + self.sp_model.decode(run))
                run.clear()

        for i in ids:
            if i in added:
                flush()
                text.append(added[i].content)
            else:
                run.append(i)
        flush()
        return "".join(text)

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """`[bos] + ids (+ [eos])` per sequence, as set by add_bos_token/add_eos_token."""
        bos = [self.bos_token_id] if self.add_bos_token and self.bos_token_id is not None else []
        eos = [self.eos_token_id] if self.add_eos_token and self.eos_token_id is not None else []
        output = bos + token_ids_0 + eos
        return output if token_ids_1 is None else output + bos + token_ids_1 + eos

    def get_special_tokens_mask(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None, already_has_special_tokens: bool = False
    ) -> list[int]:
        """1 where build_inputs_with_special_tokens adds a special token, else 0."""
        if already_has_special_tokens:
            special = set(self.all_special_ids)
            return [int(i in special) for i in token_ids_0 + (token_ids_1 or [])]
        bos = [1] if self.add_bos_token and self.bos_token_id is not None else []
        eos = [1] if self.add_eos_token and self.eos_token_id is not None else []
        mask = bos + [0] * len(token_ids_0) + eos
        return mask if token_ids_1 is None else mask + bos + [0] * len(token_ids_1) + eos

    def create_token_type_ids_from_sequences(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """All zeros: LLaMA has no segment embeddings."""
        return [0] * len(self.build_inputs_with_special_tokens(token_ids_0, token_ids_1))

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        """Copy tokenizer.model (or serialize the loaded model) into save_directory."""
        if not os.path.isdir(save_directory):
            raise NotADirectoryError(f"save_vocabulary needs an existing folder, got {save_directory}")
        out = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + "tokenizer.model")
        if self.vocab_file and os.path.isfile(self.vocab_file):
            if os.path.abspath(self.vocab_file) != os.path.abspath(out):
                copyfile(self.vocab_file, out)
        else:
            with open(out, "wb") as handle:
                handle.write(self.sp_model.serialized_model_proto())
        return (out,)

    def _save_pretrained(self, save_directory, file_names, legacy_format=None, filename_prefix=None):
        files = super()._save_pretrained(save_directory, file_names, legacy_format, filename_prefix)
        # Also write the exact tokenizer.json, so the folder serves the fast class and tokenizers-only runtimes.
        model_file = os.path.join(
            save_directory, (filename_prefix + "-" if filename_prefix else "") + "tokenizer.model"
        )
        json_file = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + "tokenizer.json")
        try:
            backend = build_backend(model_file)
        except ValueError:  # a SentencePiece model the fast pipeline cannot reproduce: slow files only
            if os.path.isfile(json_file):  # a stale one would contradict tokenizer.model
                os.remove(json_file)
            return files
        backend.post_processor = bos_eos_template(*bos_eos_pairs(self))
        backend.save(json_file)
        return tuple(files) + (json_file,)

    def save_pretrained(self, save_directory, legacy_format=None, filename_prefix=None, push_to_hub=False, **kwargs):
        """Save tokenizer.model, tokenizer.json and a tokenizer_config.json that keeps add_bos/add_eos.

        push_to_hub=True uploads once the folder is complete (transformers' own path uploads before our config
        rewrite and remote-code copy), keeping a README.md already in the folder."""
        hub = pop_hub_kwargs(kwargs, save_directory) if push_to_hub else None
        before = file_times(save_directory)
        files = super().save_pretrained(save_directory, legacy_format, filename_prefix, **kwargs)
        finish_saved_config(self, os.fspath(save_directory), filename_prefix)
        if self._auto_class is not None:
            # Remote code: the fast class must travel with the folder too (auto_map names it).
            from transformers.dynamic_module_utils import custom_object_save

            from .tokenization_llama_paper_fast import LlamaPaperTokenizerFast

            custom_object_save(LlamaPaperTokenizerFast, save_directory)
        if hub is not None:
            self._push_saved_folder(save_directory, before, hub)
        return files
