"""Exact SentencePiece encoding, memoised per segment: the ids of raw `SentencePieceProcessor.encode`, computed by
sentencepiece once per distinct "word" and looked up afterwards.

Why it is exact. Meta's tokenizer (identity normaliser, dummy prefix, no whitespace removal, BPE, byte fallback)
normalises a text to "▁" + text with every " " (and literal "▁") as "▁", then runs BPE, which merges two symbols only
when the merged string is a piece of the vocabulary. So two neighbouring characters that no piece holds together
("ab" in no piece) are never joined: every symbol lies on one side of that boundary, the text splits there into
segments encoded independently of each other and of their position (BPE's merge order within a segment is the same
alone or in the document; byte fallback is per character), and a document's ids are the concatenation of its
segments' ids. `Segmentation` finds such boundaries with one regex: before each "▁" run that follows another
character (no piece of Meta's vocabulary has "x▁"), around characters that are in no multi-character piece, and
between letters and punctuation (no piece mixes them). Natural text (and code) is Zipfian: after the first few
thousand documents almost every segment is a hit, a regex split and a dict lookup instead of BPE. The conditions are
checked on the model when it loads; for a model they do not cover (another normaliser, unigram, no byte fallback,
user-defined symbols, a piece spanning "x▁"), `MemoEncoder` is plain sentencepiece: exactness first.
"""

from __future__ import annotations

import re
from itertools import chain
from pathlib import Path

import numpy as np

_BPE = 2  # sentencepiece ModelProto.TrainerSpec.ModelType.BPE
_NORMAL, _USER_DEFINED, _UNUSED = 1, 4, 5  # ModelProto.SentencePiece.Type: the pieces BPE merges into
_FAMILIES = 3  # character families with their own runs in the segment regex (see `Segmentation`)
_JOINERS = ("\n", "\t", "\x1f", "\x1e")  # candidates for the joiner: one UTF-8 byte, never inside another character


def _load_proto(model_file: str | Path):
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    proto.ParseFromString(Path(model_file).read_bytes())
    return proto


def segmentation_blocker(proto) -> str | None:
    """Why a SentencePiece model (a ModelProto) cannot be encoded segment by segment, or None when it can."""
    norm, trainer = proto.normalizer_spec, proto.trainer_spec
    if trainer.model_type != _BPE:
        return "not a BPE model"
    if not trainer.byte_fallback:
        return "no byte fallback (unknown characters would not be encoded one by one)"
    if norm.name != "identity" or norm.precompiled_charsmap or norm.normalization_rule_tsv:
        return f"normaliser {norm.name!r} is not the identity"
    if not norm.add_dummy_prefix or norm.remove_extra_whitespaces or not norm.escape_whitespaces:
        return "the normaliser does more (or less) than add a dummy prefix and turn spaces into '▁'"
    if trainer.treat_whitespace_as_suffix:
        return "whitespace is a suffix"
    for piece in proto.pieces:
        if piece.type == _USER_DEFINED:
            return f"user-defined symbol {piece.piece!r}"
        text = piece.piece
        if piece.type in (_NORMAL, _UNUSED) and any(text[i] == "▁" and text[i - 1] != "▁" for i in range(1, len(text))):
            return f"piece {text!r} spans a word boundary"
    return None


class Segmentation:
    """How a model's normalised text splits into independently encoded segments.

    BPE never joins two neighbouring characters that no piece holds together, so a boundary between them is safe.
    Three kinds are found with one regex: before a "▁" run that follows another character (checked: no piece has
    "x▁"); around an isolated character, found in no multi-character piece (newline, tab, digits with split_digits,
    characters left to byte fallback); and between two "word" characters of different families, where a family is a
    connected group of characters that pieces put next to each other (Meta's vocabulary never mixes letters with
    punctuation: "self.assertEqual(x," is " self", ".", "assertEqual", "(", "x", ","). A segment is thus a "▁" run
    optionally followed by a run of one family, a run of one family, or one isolated character. `joiner` is an
    isolated one-byte character: "J s1 J s2" encodes to the ids of "▁", J, s1, J, s2 (each segment alone), which is
    how new segments are encoded, many per call.
    """

    def __init__(self, proto):
        merged = [p.piece.replace("▁", " ") for p in proto.pieces if p.type in (_NORMAL, _UNUSED) and len(p.piece) > 1]
        family = {c: c for text in merged for c in text if c != " "}

        def root(c: str) -> str:
            while family[c] != c:
                family[c] = family[family[c]]
                c = family[c]
            return c

        for text in merged:  # union-find: characters adjacent in some piece share a family
            for a, b in zip(text, text[1:]):
                if a != " " and b != " ":
                    family[root(a)] = root(b)
        groups: dict[str, list[str]] = {}
        for c in family:
            groups.setdefault(root(c), []).append(c)
        # The largest families get their own runs; the small rest are lumped together (never splitting between two
        # families is always safe, and a short alternation keeps the regex fast).
        groups = sorted(groups.values(), key=len, reverse=True)
        kept = [*groups[:_FAMILIES], [c for g in groups[_FAMILIES:] for c in g]]
        runs = "|".join("[" + "".join(re.escape(c) for c in sorted(g)) + "]+" for g in kept if g)
        word = "".join(re.escape(c) for c in sorted(family))
        self.families = len(groups)
        self.pattern = re.compile(f" +(?:{runs})?|{runs}|[^ {word}]" if runs else r" +|[^ ]")
        self.joiner = next((c for c in _JOINERS if c not in family), None)

    def split(self, text: str) -> list[str]:
        """The normalised text's segments, " " standing for "▁" (a literal "▁" included: the same after
        normalisation)."""
        if "▁" in text:
            text = text.replace("▁", " ")
        return self.pattern.findall(" " + text) if text else []


class _SegmentIndex(dict):
    """segment -> its row in the encoder's id store; an unseen segment gets the next row and waits in `pending`."""

    def __init__(self, first: int):
        super().__init__()
        self.next, self.pending = first, []

    def __missing__(self, segment: str) -> int:
        row = self[segment] = self.next
        self.next += 1
        self.pending.append(segment)
        return row


class MemoEncoder:
    """`encode(texts)` with the ids of `SentencePieceProcessor.encode(texts)`: memoised per segment when the model
    allows it (`self.memoised`; else `self.blocker` says why), plain sentencepiece otherwise. One per process.

    Each distinct segment gets a row; its ids live in one flat array (`_ids[_start[row]:][:_length[row]]`), so a
    batch is encoded as: regex split, one dict lookup per segment (C speed for hits), sentencepiece for the new
    segments only, then a vectorised gather. Rows 0 and 1 hold BOS and EOS."""

    def __init__(self, model_file: str | Path, max_entries: int = 1 << 20, num_threads: int = 1):
        import sentencepiece as spm

        self.model_file = str(model_file)
        self.sp = spm.SentencePieceProcessor(model_file=self.model_file)
        self.bos_id, self.eos_id = self.sp.bos_id(), self.sp.eos_id()
        self.max_entries, self.num_threads = max_entries, num_threads
        self.hits = self.misses = 0
        proto = _load_proto(self.model_file)
        self.blocker = segmentation_blocker(proto)
        if self.blocker is None:
            self.segmentation = Segmentation(proto)
            self.blocker = self._check_joiner()
        self.memoised = self.blocker is None
        if self.memoised:
            self._reset()

    def _check_joiner(self) -> str | None:
        joiner = self.segmentation.joiner
        if joiner is None:
            return "no isolated one-byte character to join new segments with"
        self._joiner_id = self.sp.encode(joiner)[-1]  # after the dummy prefix's "▁"
        if self.sp.id_to_piece(self._joiner_id) not in (joiner, f"<0x{ord(joiner):02X}>"):
            return f"{joiner!r} is not encoded as one piece of its own"
        return None

    def _reset(self) -> None:
        self._index = _SegmentIndex(first=2)
        self._index[self.segmentation.joiner] = 2  # the only segment holding the joiner: it is isolated
        self._index.next = 3
        self._ids = np.empty(1 << 16, dtype=np.int32)
        self._ids[:3] = self.bos_id, self.eos_id, self._joiner_id
        self._used = 3
        self._start = np.arange(1 << 14, dtype=np.int64)  # rows 0-2 (BOS, EOS, joiner): one id each, at 0-2
        self._length = np.ones(1 << 14, dtype=np.int64)

    def _store(self, ids: np.ndarray) -> None:
        """Append ids to the flat store (their rows' starts and lengths are set by the caller)."""
        if self._used + len(ids) > len(self._ids):
            self._ids = np.resize(self._ids, max(2 * len(self._ids), self._used + len(ids)))
        self._ids[self._used:self._used + len(ids)] = ids
        self._used += len(ids)

    def _encode_pending(self) -> None:
        """sentencepiece's ids of the new segments, ~4k characters per call (BPE's cost grows faster than the
        length), written to their rows."""
        pending, joiner = self._index.pending, self.segmentation.joiner
        self._index.pending = []
        first = self._index.next - len(pending)
        if self._index.next > len(self._start):
            size = max(2 * len(self._start), self._index.next)
            self._start, self._length = np.resize(self._start, size), np.resize(self._length, size)
        chunks, begin, size = [], 0, 0
        for i, segment in enumerate(pending):
            size += len(segment) + 1
            if size > 4096 or i == len(pending) - 1:
                chunks.append(pending[begin:i + 1])
                begin, size = i + 1, 0
        row = first
        encoded = self.sp.encode([joiner + joiner.join(chunk) for chunk in chunks], num_threads=self.num_threads)
        for chunk, ids in zip(chunks, encoded):
            ids = np.asarray(ids, dtype=np.int32)
            cuts = np.flatnonzero(ids == self._joiner_id)  # ids: "▁", then (J, segment) per segment
            if len(cuts) != len(chunk):
                raise AssertionError("joined segments did not come back one per joiner")  # a model check missed
            lengths = np.diff(np.append(cuts, len(ids))) - 1
            keep = np.ones(len(ids), dtype=bool)
            keep[: cuts[0] + 1] = False
            keep[cuts] = False
            self._start[row:row + len(chunk)] = self._used + np.cumsum(lengths) - lengths
            self._length[row:row + len(chunk)] = lengths
            self._store(ids[keep])
            row += len(chunk)

    def _rows(self, texts: list[str], special: bool) -> tuple[np.ndarray, np.ndarray]:
        """Rows of every segment of every text (with BOS/EOS rows around each when `special`), and the number of
        rows per text."""
        if self._index.next > self.max_entries:  # bounded memory: start over (Zipf refills it fast)
            self._reset()
        split = self.segmentation.split
        per_text = [split(t) for t in texts]
        counts = np.fromiter(map(len, per_text), dtype=np.int64, count=len(texts))
        get = self._index.__getitem__
        if special:
            counts += 2
            rows = chain.from_iterable(chain((0,), map(get, s), (1,)) for s in per_text)
        else:
            rows = map(get, chain.from_iterable(per_text))
        rows = np.fromiter(rows, dtype=np.int64, count=int(counts.sum()))
        new = len(self._index.pending)
        self.misses += new
        self.hits += len(rows) - new
        if new:
            try:
                self._encode_pending()
            except BaseException:  # e.g. a lone surrogate, which sentencepiece refuses too: rows without ids
                self._reset()
                raise
        return rows, counts

    def _gather(self, rows: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lengths = self._length[rows]
        ends = np.cumsum(lengths)
        positions = np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(self._start[rows] - ends + lengths,
                                                                             lengths)
        bounds = np.concatenate([[0], ends])[np.concatenate([[0], np.cumsum(counts)])]
        return self._ids[positions], np.diff(bounds)

    def encode_documents(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """`[BOS] + ids + [EOS]` of every text, concatenated (int32), and each text's token count (BOS/EOS
        included): the layout of a token shard."""
        if not self.memoised:
            encoded = self.sp.encode(texts, num_threads=self.num_threads)
            lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)) + 2
            flat = chain.from_iterable(chain((self.bos_id,), ids, (self.eos_id,)) for ids in encoded)
            return np.fromiter(flat, dtype=np.int32, count=int(lengths.sum())), lengths
        return self._gather(*self._rows(texts, special=True))

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (no BOS/EOS), identical to `SentencePieceProcessor.encode(texts)`."""
        if not self.memoised:
            return self.sp.encode(texts, num_threads=self.num_threads)
        ids, lengths = self._gather(*self._rows(texts, special=False))
        return [part.tolist() for part in np.split(ids, np.cumsum(lengths)[:-1])] if len(texts) else []


__all__ = ["MemoEncoder", "Segmentation", "segmentation_blocker"]
