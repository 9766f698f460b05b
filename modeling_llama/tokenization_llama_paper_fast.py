"""LlamaPaperTokenizerFast: the LLaMA tokenizer on the `tokenizers` library, identical to SentencePiece.

Built from `tokenizer.model` without protobuf (see `sentencepiece_bpe.py`), or loaded from the exact
`tokenizer.json` that our save writes. Same behaviour as `LlamaPaperTokenizer`: `[bos] + sp.encode(text)`,
`sp.decode`, special-token strings in text encoded as text unless `split_special_tokens=False`.

This file is copied next to saved checkpoints (remote code): only relative sibling imports.
"""

from __future__ import annotations

import os

from transformers import AddedToken, PreTrainedTokenizerFast
from transformers.utils import logging

from .sentencepiece_bpe import (
    NoExactFastPipeline,
    bos_eos_template,
    build_backend,
    is_exact_pipeline,
    read_sentencepiece_model,
    special_tokens_flags,
)
from .hub_push import KeepCardPushMixin, file_times, pop_hub_kwargs
from .tokenization_llama_paper import LlamaPaperTokenizer, bos_eos_pairs, finish_saved_config

VOCAB_FILES_NAMES = {"vocab_file": "tokenizer.model", "tokenizer_file": "tokenizer.json"}
logger = logging.get_logger(__name__)


def _special(content: str | AddedToken | None) -> AddedToken | None:
    if content is None or isinstance(content, AddedToken):
        return content
    return AddedToken(content, special=True, normalized=False, lstrip=False, rstrip=False)


class LlamaPaperTokenizerFast(KeepCardPushMixin, PreTrainedTokenizerFast):
    """Fast LLaMA tokenizer; offsets mapping supported; saves tokenizer.model and tokenizer.json."""

    vocab_files_names = VOCAB_FILES_NAMES
    slow_tokenizer_class = LlamaPaperTokenizer
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "left"  # batched generation with a decoder-only model pads on the left

    @classmethod
    def convert_to_native_format(cls, trust_remote_code: bool = False, **kwargs):
        """Keep the files as they are: __init__ builds the exact backend itself (transformers' path needs protobuf)."""
        return kwargs

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load a folder or repo; one whose SentencePiece model has no exact fast pipeline gives LlamaPaperTokenizer.

        transformers 5 resolves every tokenizer_class of ours to this class (slow names are aliased to fast),
        so this is where a slow-only folder (e.g. a converted Unigram model) gets the class that is exact for it.
        """
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except NoExactFastPipeline as error:
            logger.info(f"{error} Loading LlamaPaperTokenizer instead.")
            return LlamaPaperTokenizer.from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def __init__(
        self,
        vocab_file: str | None = None,
        tokenizer_file: str | None = None,
        unk_token: str | AddedToken | None = None,
        bos_token: str | AddedToken | None = None,
        eos_token: str | AddedToken | None = None,
        pad_token: str | AddedToken | None = None,
        add_bos_token: bool | None = None,
        add_eos_token: bool | None = None,
        split_special_tokens: bool = True,
        **kwargs,
    ) -> None:
        backend = kwargs.pop("tokenizer_object", None)
        has_model = vocab_file is not None and os.path.isfile(vocab_file)
        has_json = tokenizer_file is not None and os.path.isfile(tokenizer_file)
        if backend is None and has_json:
            from tokenizers import Tokenizer

            backend = Tokenizer.from_file(tokenizer_file)
            if has_model and not is_exact_pipeline(backend):  # e.g. written by transformers' LlamaTokenizer
                logger.warning(
                    f"{tokenizer_file} does not reproduce SentencePiece exactly; rebuilding from {vocab_file}."
                )
                backend = None
        spec = read_sentencepiece_model(vocab_file) if backend is None and has_model else None
        if backend is None and has_model:
            backend = build_backend(vocab_file, spec)
        elif backend is None:
            raise FileNotFoundError(
                f"{type(self).__name__} needs tokenizer.model or tokenizer.json (got vocab_file={vocab_file!r}, "
                f"tokenizer_file={tokenizer_file!r}). Pass vocab_file='path/to/tokenizer.model' or a folder holding it."
            )
        if add_bos_token is None or add_eos_token is None:
            flags = special_tokens_flags(backend)
            add_bos_token = (flags[0] if flags else True) if add_bos_token is None else add_bos_token
            add_eos_token = (flags[1] if flags else False) if add_eos_token is None else add_eos_token
        if spec is not None:  # the special pieces are whatever the SentencePiece model says (LLaMA: <unk>, <s>, </s>)
            unk_token = unk_token if unk_token is not None else spec.piece_of(spec.unk_id)
            bos_token = bos_token if bos_token is not None else spec.piece_of(spec.bos_id)
            eos_token = eos_token if eos_token is not None else spec.piece_of(spec.eos_id)
            pad_token = pad_token if pad_token is not None else spec.piece_of(spec.pad_id)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        kwargs.pop("vocab", None)
        kwargs.pop("merges", None)
        self._tokenizer = backend  # set before the base __init__, which would otherwise deep-copy a tokenizer_object
        super().__init__(
            vocab_file=vocab_file,
            unk_token=_special(unk_token if unk_token is not None else "<unk>"),
            bos_token=_special(bos_token if bos_token is not None else "<s>"),
            eos_token=_special(eos_token if eos_token is not None else "</s>"),
            pad_token=_special(pad_token),
            add_bos_token=bool(add_bos_token),
            add_eos_token=bool(add_eos_token),
            split_special_tokens=split_special_tokens,
            **kwargs,
        )
        if not has_model:
            self.vocab_file = None

    def _decode(self, token_ids, skip_special_tokens: bool = False, **kwargs) -> str:
        # As sp.decode (and the slow class): <unk> is never skipped; the decoder prints it as " ⁇ ".
        if skip_special_tokens:
            ids = token_ids["input_ids"] if isinstance(token_ids, dict) else token_ids
            ids = [ids] if isinstance(ids, int) else ids
            skip = {i for i, t in self.added_tokens_decoder.items() if t.special} - {self.unk_token_id}
            token_ids = [i for i in ids if i not in skip]
        return super()._decode(token_ids, skip_special_tokens=False, **kwargs)

    def update_post_processor(self) -> None:
        """`<s> $A` (+ `</s>`), following add_bos_token/add_eos_token."""
        self._tokenizer.post_processor = bos_eos_template(*bos_eos_pairs(self))

    def _save_pretrained(self, save_directory, file_names, legacy_format=None, filename_prefix=None):
        files = super()._save_pretrained(save_directory, file_names, legacy_format, filename_prefix)
        if self.can_save_slow_tokenizer:  # tokenizer.model travels too: the slow class and SentencePiece users need it
            files = tuple(files) + tuple(self.save_vocabulary(os.fspath(save_directory), filename_prefix))
        return files

    def save_pretrained(self, save_directory, legacy_format=None, filename_prefix=None, push_to_hub=False, **kwargs):
        """Save tokenizer.json, tokenizer.model and a tokenizer_config.json that keeps add_bos/add_eos.

        push_to_hub=True uploads once the folder is complete, keeping a README.md already in the folder."""
        hub = pop_hub_kwargs(kwargs, save_directory) if push_to_hub else None
        before = file_times(save_directory)
        files = super().save_pretrained(save_directory, legacy_format, filename_prefix, **kwargs)
        finish_saved_config(self, os.fspath(save_directory), filename_prefix)
        if hub is not None:
            self._push_saved_folder(save_directory, before, hub)
        return files
