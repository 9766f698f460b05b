"""Tokenization once, offline: documents -> token shards per source, with BOS/EOS and a document index.

Each task writes `<rank:05d>.ds` (little-endian token ids: uint16 when the vocabulary fits, else uint32; every
document is `[BOS] + sentencepiece ids + [EOS]`), `<rank:05d>.ds.index` (uint64 cumulative end offsets of the
documents: datatrove's DocumentTokenizer layout) and `<rank:05d>.ds.metadata`. The ids are raw SentencePiece's
(`encode` of the paper's tokenizer.model), which are LlamaPaperTokenizerFast's ids, computed by `MemoEncoder`
(sentencepiece per distinct word, memoised: the same ids, several times faster; plain sentencepiece for a model the
memo cannot be proved exact for).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep


def resolve_sentencepiece(path: str | Path) -> str:
    """A SentencePiece model file: `path` itself, or `path/tokenizer.model` for a tokenizer folder."""
    path = Path(path)
    candidate = path / "tokenizer.model" if path.is_dir() else path
    if not candidate.is_file():
        raise FileNotFoundError(f"No SentencePiece model at {path} (expected a tokenizer.model file or a folder "
                                "holding one, as `llama-paper train-tokenizer` writes).")
    return str(candidate)


class SentencePieceShardWriter(PipelineStep):
    """Terminal step: encode documents in batches (sentencepiece's ids, memoised per word) and write this task's
    token shard."""

    name = "🔢 SentencePiece shards"
    type = "🔢 - TOKENIZER"

    def __init__(self, model_path: str | Path, output_folder: str | Path, batch_size: int = 512, num_threads: int = 1):
        super().__init__()
        self.model_path, self.output_folder = resolve_sentencepiece(model_path), str(output_folder)
        self.batch_size, self.num_threads = batch_size, num_threads

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from ..memo_encoder import MemoEncoder

        encoder = MemoEncoder(self.model_path, num_threads=self.num_threads)
        bos, eos, vocab = encoder.bos_id, encoder.eos_id, encoder.sp.get_piece_size()
        if bos < 0 or eos < 0:
            raise ValueError(f"{self.model_path} has no BOS/EOS ids; the paper's tokenizer has <s>=1 and </s>=2.")
        dtype = np.uint16 if vocab <= 65536 else np.uint32
        folder = Path(self.output_folder)
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / f"{rank:05d}.ds"
        ends, total, documents = [], 0, 0
        partial = Path(f"{stem}.partial")
        with partial.open("wb") as out:
            batch: list[str] = []

            def flush() -> None:
                nonlocal total, documents
                with self.track_time(unit="batch"):
                    ids, lengths = encoder.encode_documents(batch)  # [BOS] ids [EOS] per document
                out.write(ids.astype(dtype).tobytes())
                ends.extend((total + np.cumsum(lengths)).tolist())
                total += int(lengths.sum())
                documents += len(batch)
                self.stat_update("tokens", value=int(lengths.sum()))
                batch.clear()

            for doc in data:
                self.stat_update("documents")
                batch.append(doc.text)
                if len(batch) >= self.batch_size:
                    flush()
            if batch:
                flush()
        np.asarray(ends, dtype=np.uint64).tofile(f"{stem}.index.partial")
        Path(f"{stem}.metadata.partial").write_text(json.dumps(
            {"tokenizer": self.model_path, "token_size": np.dtype(dtype).itemsize, "tokens": total,
             "documents": documents, "bos_id": bos, "eos_id": eos, "vocab_size": vocab,
             "encoder": "memoised sentencepiece" if encoder.memoised else "sentencepiece"}) + "\n")
        # Renamed once complete: a killed task leaves only .partial files, which its rerun overwrites.
        for suffix in ("", ".index", ".metadata"):
            os.replace(f"{stem}{suffix}.partial", f"{stem}{suffix}")
        return
        yield  # a generator, like every datatrove step
