"""`--cache DIR`: a request cache that makes long evaluations resumable and never mixes models.

One SQLite file, `DIR/requests.sqlite`, in WAL mode (readers never block the writer; several processes and nodes on
a shared filesystem with working locks may use it at once). Each entry's key is the SHA-256 of
`[model fingerprint, protocol, request type, request]`, where the fingerprint covers the weights, config, dtype and
tokenizer (`fingerprint.model_fingerprint`): another model, or the same model in another dtype, never reads these
entries. A request is the token ids it scores (log-likelihood) or its context, generation settings and, for sampled
generations, the seed and the sample's index. Results are committed batch by batch as they are computed, so a run
killed with SIGKILL loses at most the batches in flight.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from typing import Any, Hashable, Iterable

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (key TEXT PRIMARY KEY, model TEXT NOT NULL, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS file_hashes (path TEXT, size INTEGER, mtime_ns INTEGER, sha256 TEXT NOT NULL,
                                        PRIMARY KEY (path, size, mtime_ns));
"""


class RequestCache:
    """Results of evaluation requests by (model fingerprint, protocol, request), in `folder/requests.sqlite`."""

    def __init__(self, folder: str, fingerprint: str = "", protocol: str = ""):
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise NotADirectoryError(f"--cache {folder} is a file; pass a folder (it will hold requests.sqlite).")
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, "requests.sqlite")
        # autocommit mode; explicit BEGIN IMMEDIATE per batch; wait up to 10 min for another process's lock
        self.conn = sqlite3.connect(self.path, timeout=600, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process never loses a commit
        self.conn.executescript(SCHEMA)
        self.fingerprint, self.protocol = fingerprint, protocol

    def bind(self, fingerprint: str, protocol: str) -> None:
        """Set the model fingerprint and protocol that scope every key from now on."""
        self.fingerprint, self.protocol = fingerprint, protocol

    def key(self, kind: str, request: Hashable) -> str:
        """The entry key of `request` (JSON-serialisable) of type `kind` for the bound model and protocol."""
        if not self.fingerprint:
            raise RuntimeError("RequestCache.bind(fingerprint, protocol) must be called before use.")
        text = json.dumps([self.fingerprint, self.protocol, kind, request], separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def get_many(self, kind: str, requests: Iterable[Hashable]) -> dict[Hashable, Any]:
        """The cached results among `requests`, by request."""
        by_key = {self.key(kind, r): r for r in requests}
        found: dict[Hashable, Any] = {}
        keys = list(by_key)
        for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in self.conn.execute(f"SELECT key, value FROM requests WHERE key IN ({marks})", chunk):
                found[by_key[key]] = json.loads(value)
        return found

    def put_many(self, kind: str, results: dict[Hashable, Any]) -> None:
        """Store `results` (request -> JSON-serialisable value) in one transaction (newer results replace older)."""
        rows = [(self.key(kind, r), self.fingerprint, json.dumps(v)) for r, v in results.items()]
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.executemany("INSERT OR REPLACE INTO requests (key, model, value) VALUES (?, ?, ?)", rows)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def file_hash(self, path: str, compute: Any) -> str:
        """SHA-256 of a file, computed by `compute(path)` once per (path, size, mtime) and remembered here."""
        st = os.stat(path)
        row = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
        hit = self.conn.execute("SELECT sha256 FROM file_hashes WHERE path=? AND size=? AND mtime_ns=?", row).fetchone()
        if hit:
            return hit[0]
        digest = compute(path)
        self.conn.execute("INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?)", (*row, digest))
        return digest

    def count(self) -> int:
        """Entries for the bound model (all models if none is bound)."""
        if self.fingerprint:
            return self.conn.execute("SELECT COUNT(*) FROM requests WHERE model=?", (self.fingerprint,)).fetchone()[0]
        return self.conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()
