"""A SentencePiece BPE `tokenizer.model` read without protobuf and rebuilt as an exact `tokenizers` pipeline.

This file is copied next to saved checkpoints (remote code): it imports only the standard library,
`tokenizers` and `sentencepiece`, never this package by name.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, processors

# SentencePiece piece types (sentencepiece_model.proto, `SentencePiece.Type`).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
BPE_MODEL_TYPE = 2  # TrainerSpec.ModelType.BPE
SPACE = "\u2581"  # "▁", SentencePiece's escaped space


@dataclass
class SentencePieceModel:
    """The fields of a `tokenizer.model` (ModelProto) that decide how text is encoded."""

    pieces: list[tuple[str, float, int]] = field(default_factory=list)  # (piece, score, type) in id order
    model_type: int = 1  # proto default: UNIGRAM
    byte_fallback: bool = False
    treat_whitespace_as_suffix: bool = False
    normalizer_name: str = ""
    precompiled_charsmap: bytes = b""
    normalization_rule_tsv: str = ""
    add_dummy_prefix: bool = True  # proto defaults
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True
    unk_id: int = 0  # TrainerSpec defaults; -1 means "none"
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    unk_surface: str = " \u2047 "  # what sp.decode prints for an <unk> id (TrainerSpec default " ⁇ ")

    def piece_of(self, index: int) -> str | None:
        """The piece with this id, or None for -1 / out of range."""
        return self.pieces[index][0] if 0 <= index < len(self.pieces) else None


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """Yield (field_number, wire_type, value) of one protobuf message; value is int or bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated field")
        yield number, wire, value


def _read_piece(value: bytes) -> tuple[str, float, int]:
    """(piece, score, type) of one SentencePiece message."""
    # Fast path for the encoding every trainer writes: 0x0A len piece, 0x15 float32 score, optional 0x18 type.
    if len(value) > 1 and value[0] == 0x0A and value[1] < 0x80:
        end = 2 + value[1]
        piece, score, piece_type, pos = value[2:end].decode("utf-8"), 0.0, NORMAL, end
        if pos + 5 <= len(value) and value[pos] == 0x15:
            score, pos = struct.unpack_from("<f", value, pos + 1)[0], pos + 5
        if pos + 2 <= len(value) and value[pos] == 0x18 and value[pos + 1] < 0x80:
            piece_type, pos = value[pos + 1], pos + 2
        if pos == len(value):
            return piece, score, piece_type
    piece, score, piece_type = "", 0.0, NORMAL
    for number, _, field_value in _fields(value):
        if number == 1:
            piece = field_value.decode("utf-8")
        elif number == 2:
            score = struct.unpack("<f", field_value)[0]
        elif number == 3:
            piece_type = field_value
    return piece, score, piece_type


def read_sentencepiece_model(path: str | os.PathLike) -> SentencePieceModel:
    """Parse a SentencePiece `tokenizer.model` (protobuf wire format) with the standard library only."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SentencePiece model not found: {path}. Pass the path of a `tokenizer.model` file.")
    with open(path, "rb") as handle:
        data = handle.read()
    model = SentencePieceModel()
    try:
        for number, _, value in _fields(data):
            if number == 1:  # repeated SentencePiece pieces
                model.pieces.append(_read_piece(value))
            elif number == 2:  # TrainerSpec
                for n, _, v in _fields(value):
                    if n == 3:
                        model.model_type = v
                    elif n == 24:
                        model.treat_whitespace_as_suffix = bool(v)
                    elif n == 35:
                        model.byte_fallback = bool(v)
                    elif n == 44:
                        model.unk_surface = v.decode("utf-8")
                    elif n in (40, 41, 42, 43):  # unk/bos/eos/pad ids, int32 (-1 is a 10-byte varint)
                        setattr(
                            model,
                            ("unk_id", "bos_id", "eos_id", "pad_id")[n - 40],
                            v - (1 << 64) if v >= 1 << 63 else v,
                        )
            elif number == 3:  # NormalizerSpec
                for n, _, v in _fields(value):
                    if n == 1:
                        model.normalizer_name = v.decode("utf-8")
                    elif n == 2:
                        model.precompiled_charsmap = bytes(v)
                    elif n == 3:
                        model.add_dummy_prefix = bool(v)
                    elif n == 4:
                        model.remove_extra_whitespaces = bool(v)
                    elif n == 5:
                        model.escape_whitespaces = bool(v)
                    elif n == 6:
                        model.normalization_rule_tsv = v.decode("utf-8")
    except (ValueError, UnicodeDecodeError, struct.error) as error:
        raise ValueError(f"{path} is not a SentencePiece model file ({error}); expected a `tokenizer.model`.") from None
    if not model.pieces:
        raise ValueError(f"{path} is not a SentencePiece model file (no pieces); expected a `tokenizer.model`.")
    return model


class NoExactFastPipeline(ValueError):
    """The SentencePiece model has options no `tokenizers` pipeline reproduces exactly (the slow class is exact)."""


def exact_fast_problems(model: SentencePieceModel) -> list[str]:
    """Why no `tokenizers` pipeline reproduces this SentencePiece model exactly (empty: `build_backend` is exact)."""
    problems = []
    if model.model_type != BPE_MODEL_TYPE:
        problems.append("the model type is not BPE")
    if model.normalization_rule_tsv:
        problems.append(f"it uses custom normalization rules ({model.normalizer_name!r})")
    if not model.escape_whitespaces or model.treat_whitespace_as_suffix:
        problems.append("whitespace is not escaped as a '▁' prefix")
    if any(t in (USER_DEFINED, UNUSED) for _, _, t in model.pieces):
        problems.append("it has user-defined or unused pieces")
    return problems


def check_exactly_convertible(model: SentencePieceModel, path: str) -> None:
    """Raise a clear error for SentencePiece options the `tokenizers` pipeline below would not reproduce exactly."""
    problems = exact_fast_problems(model)
    if problems:
        raise NoExactFastPipeline(
            f"{path} cannot be converted exactly to a fast tokenizer: {'; '.join(problems)}. "
            "Use the slow `LlamaPaperTokenizer`, which runs SentencePiece itself, for this model."
        )


def bpe_merges(model: SentencePieceModel) -> list[tuple[str, str]]:
    """Merges that reproduce SentencePiece BPE: every split of a NORMAL piece into two NORMAL pieces, best score first.

    SentencePiece merges the adjacent pair whose concatenation is the highest-scoring piece; `tokenizers` applies
    the lowest-ranked merge, so ranking by descending score (ties by id) is the same order. Control, byte and
    unknown pieces are never the result or an operand of a SentencePiece merge, so they are left out here.
    """
    normal = {piece: i for i, (piece, _, t) in enumerate(model.pieces) if t == NORMAL}
    ranked = []
    for piece, index in normal.items():
        score = model.pieces[index][1]
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                ranked.append((-score, index, normal[left], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def build_backend(path: str | os.PathLike, model: SentencePieceModel | None = None) -> Tokenizer:
    """A `tokenizers.Tokenizer` whose encode and decode equal SentencePiece's on every string (no post-processor).

    `model` is `read_sentencepiece_model(path)` when the caller already has it.
    """
    model = model if model is not None else read_sentencepiece_model(path)
    check_exactly_convertible(model, os.fspath(path))
    vocab = {piece: i for i, (piece, _, _) in enumerate(model.pieces)}
    unk = next((p for p, _, t in model.pieces if t == UNKNOWN), None)
    backend = Tokenizer(
        models.BPE(
            vocab=vocab, merges=bpe_merges(model), unk_token=unk, fuse_unk=True, byte_fallback=model.byte_fallback
        )
    )
    backend.normalizer = normalizers.Sequence(_normalizer_steps(model))
    backend.decoder = decoders.Sequence(_decoder_steps(model, unk))
    backend.add_special_tokens(
        [AddedToken(p, special=True, normalized=False) for p, _, t in model.pieces if t in (UNKNOWN, CONTROL)]
    )
    return backend


def _normalizer_steps(model: SentencePieceModel) -> list:
    """SentencePiece's normalizer: charsmap, then whitespace handling, dummy prefix, spaces escaped as "▁".

    add_dummy_prefix prepends "▁" to non-empty text even when it already starts with a space, and every space
    becomes "▁". `Metaspace` would skip the prefix before a leading space, which is the classic HF/LLaMA
    mismatch, so plain normalizers are used instead. remove_extra_whitespaces works on the charsmap's output and
    only on " " for leading and repeated spaces (a literal "▁" there is kept), hence regexes rather than `Strip`,
    which knows all of Unicode; trailing ones are removed after escaping, so trailing "▁"s go too (sp does so).
    """
    steps = [normalizers.Precompiled(model.precompiled_charsmap)] if model.precompiled_charsmap else []
    if model.remove_extra_whitespaces:
        steps += [normalizers.Replace(Regex(" {2,}"), " "), normalizers.Replace(Regex(r"\A "), "")]
    if model.add_dummy_prefix:
        steps.append(normalizers.Prepend(SPACE))
    steps.append(normalizers.Replace(" ", SPACE))
    return steps + ([normalizers.Replace(Regex(SPACE + r"+\z"), "")] if model.remove_extra_whitespaces else [])


def _decoder_steps(model: SentencePieceModel, unk: str | None) -> list:
    """sp.decode: "▁" -> " ", byte pieces -> bytes, <unk> -> its surface (" ⁇ "), leading "▁" of the text dropped.

    SentencePiece drops the text's leading "▁"s (all of them with remove_extra_whitespaces, else one with
    add_dummy_prefix), but never the space of an <unk> surface. Without byte pieces the "▁" can be stripped before
    it becomes a space, which keeps a leading <unk> exact; with byte fallback the bytes must be decoded after
    "▁" -> " " (a byte-spelled "▁" stays "▁" in sp.decode), so the strip comes last (a leading <unk>, which encode
    never gives such a model, then loses its space).
    """
    strip = 1 << 30 if model.remove_extra_whitespaces else int(model.add_dummy_prefix)
    steps = [decoders.Replace(unk, model.unk_surface)] if unk else []
    if model.byte_fallback:
        steps += [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
        return steps + ([decoders.Strip(" ", strip, 0)] if strip else [])
    steps.append(decoders.Fuse())
    return steps + ([decoders.Strip(SPACE, strip, 0)] if strip else []) + [decoders.Replace(SPACE, " ")]


def is_exact_pipeline(backend: Tokenizer) -> bool:
    """Whether a tokenizer.json has the pipeline `build_backend` writes (not, e.g., transformers' Metaspace one)."""
    if backend.pre_tokenizer is not None or backend.normalizer is None:
        return False
    normalizer = json.loads(backend.normalizer.__getstate__())
    steps = [step.get("type") for step in normalizer.get("normalizers", [])]
    model = json.loads(backend.model.__getstate__())
    return bool(steps) and steps[-1] == "Replace" and "Metaspace" not in steps and model.get("type") == "BPE"


def bos_eos_template(bos: tuple[str, int] | None, eos: tuple[str, int] | None) -> processors.TemplateProcessing:
    """`<s> $A` (+ `</s>`) for one sequence and the same again for the second one of a pair."""
    one = [bos[0]] if bos else []
    end = [eos[0]] if eos else []
    return processors.TemplateProcessing(
        single=[*one, "$A:0", *end],
        pair=[*one, "$A:0", *end, *[f"{t}:1" for t in one], "$B:1", *[f"{t}:1" for t in end]],
        special_tokens=[t for t in (bos, eos) if t],
    )


def special_tokens_flags(backend: Tokenizer) -> tuple[bool, bool] | None:
    """(add_bos, add_eos) read from a backend's TemplateProcessing, or None if it has no such template.

    transformers drops `add_bos_token`/`add_eos_token` from tokenizer_config.json when a tokenizer.json exists,
    so the template that our save wrote into tokenizer.json is the record of them.
    """
    if backend.post_processor is None:
        return None
    processor = json.loads(backend.post_processor.__getstate__())
    if processor.get("type") != "TemplateProcessing":
        return None
    single = processor.get("single", [])
    return bool(single) and "SpecialToken" in single[0], bool(single) and "SpecialToken" in single[-1]


def special_tokens_flags_from_json(tokenizer_file: str | os.PathLike) -> tuple[bool, bool] | None:
    """`special_tokens_flags` of the tokenizer.json at `tokenizer_file`."""
    return special_tokens_flags(Tokenizer.from_file(os.fspath(tokenizer_file)))
