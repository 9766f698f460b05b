"""The local Hub's storage: repositories (branches, commits, file tables) and objects on disk.

Layout under the storage folder: `lfs/<sha256>` (LFS objects), `blobs/<git sha1>` (regular files' content),
`repos/<type>/<ns>/<name>.json` (one record per repository: branches, commits and each commit's file table, with the
oids the Hub reports: git-blob sha1 for regular files, sha256 + the pointer's sha1 for LFS files), `tmp/` (uploads
in flight). Used by `publishing.local_hub`; standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file's content (what the Hub reports as a regular file's oid)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file that stands for an LFS object in the repository."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class HubError(Exception):
    """An HTTP error answer: status, X-Error-Code and message (mapped to exceptions by huggingface_hub)."""

    def __init__(self, status: int, code: str | None, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class RepoStore:
    """Repositories, commits and objects on disk; one lock serialises every change."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        for sub in ("lfs", "blobs", "repos", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()

    # --- repositories ------------------------------------------------------------------------------------------
    def _path(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / repo_type / f"{repo_id}.json"

    def load(self, repo_type: str, repo_id: str) -> dict[str, Any]:
        """The repository's record; 404 RepoNotFound when there is none."""
        path = self._path(repo_type, repo_id)
        if not path.is_file():
            raise HubError(404, "RepoNotFound", f"Repository {repo_id} not found")
        return json.loads(path.read_text())

    def save(self, repo_type: str, repo_id: str, repo: dict[str, Any]) -> None:
        """Write a repository record atomically."""
        path = self._path(repo_type, repo_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(repo))
        os.replace(tmp, path)

    def create(self, repo_type: str, repo_id: str, private: bool) -> bool:
        """Create an empty repository with an initial commit on main; False if it already exists."""
        with self.lock:
            if self._path(repo_type, repo_id).is_file():
                return False
            sha = hashlib.sha1(f"{repo_type}/{repo_id}/{time.time_ns()}".encode()).hexdigest()
            commit = {"parent": None, "message": "initial commit", "files": {}, "date": time.time()}
            self.save(repo_type, repo_id, {"private": private, "branches": {"main": sha}, "commits": {sha: commit},
                                           "prs": 0})
            return True

    @staticmethod
    def resolve(repo: dict[str, Any], revision: str) -> str:
        """Commit sha of a branch name or sha; 404 RevisionNotFound otherwise."""
        if revision in repo["branches"]:
            return repo["branches"][revision]
        if revision in repo["commits"]:
            return revision
        raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")

    # --- objects -----------------------------------------------------------------------------------------------
    def has_lfs(self, sha256: str) -> bool:
        """Whether an LFS object is stored."""
        return (self.root / "lfs" / sha256).is_file()

    def lfs_path(self, sha256: str) -> Path:
        """Where an LFS object lives."""
        return self.root / "lfs" / sha256

    def put_blob(self, data: bytes) -> str:
        """Store a regular file's content; returns its git blob sha1."""
        oid = git_blob_sha1(data)
        path = self.root / "blobs" / oid
        if not path.is_file():
            path.write_bytes(data)
        return oid

    def blob_path(self, oid: str) -> Path:
        """Where a regular file's content lives."""
        return self.root / "blobs" / oid


__all__ = ["RepoStore", "HubError", "git_blob_sha1", "lfs_pointer"]
