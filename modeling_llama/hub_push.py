"""`push_to_hub` and `save_pretrained(push_to_hub=True)` for our classes, keeping the model card of the folder.

transformers' `PushToHubMixin` writes a card into the upload: the repository's current card or, when it has none, a
blank template, so the card a run wrote (hyper-parameters, mixture, losses, loss curve) is replaced and the files it
refers to stay behind. Its tokenizer path also uploads before our tokenizers finish their folder (tokenizer_config.json
rewritten, the fast class's source copied), so our tokenizers used to refuse `push_to_hub`. Here the folder is
completed first, then uploaded with `HfApi.upload_folder`, keeping a README.md that is already there (and its
companions: loss curve, metrics, run info, eval results, LICENSE) and writing a minimal card only where none exists.

This file is copied next to saved checkpoints (remote code): only relative sibling imports.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

CARD = "README.md"
# What a model card refers to and should travel with it (written by `llama-paper pretrain`/`finetune`/`eval`).
CARD_COMPANIONS = (CARD, "loss_curve.png", "run_info.json", "metrics.jsonl", "summary.json", "finetune_summary.json",
                   "eval_results.json", "LICENSE")
HUB_KWARGS = ("repo_id", "commit_message", "commit_description", "create_pr", "token", "private", "revision", "tags")


def pop_hub_kwargs(kwargs: dict[str, Any], save_directory: str | os.PathLike) -> dict[str, Any]:
    """Take the Hub arguments out of save_pretrained's kwargs (repo_id defaults to the folder's name)."""
    hub = {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}
    hub.setdefault("repo_id", Path(save_directory).resolve().name)
    return hub


def file_times(folder: str | os.PathLike) -> dict[str, float]:
    """Modification time of every file under `folder` (relative POSIX paths)."""
    root = Path(folder)
    if not root.is_dir():
        return {}
    return {p.relative_to(root).as_posix(): p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


def copy_card_files(source: str | os.PathLike | None, target: str | os.PathLike) -> list[str]:
    """Copy the card and its companions from a local model folder (if `source` is one) into `target`."""
    if not source or not Path(source).is_dir():
        return []
    copied = []
    for name in CARD_COMPANIONS:
        if (Path(source) / name).is_file() and not (Path(target) / name).exists():
            shutil.copy2(Path(source) / name, Path(target) / name)
            copied.append(name)
    return copied


def ensure_card(folder: str | os.PathLike, repo_id: str, api, token: Any, tags: list[str] | None) -> None:
    """Keep README.md when the folder has one; else the repository's card, else a minimal card of ours."""
    from huggingface_hub import ModelCard, ModelCardData
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    path = Path(folder) / CARD
    if path.is_file():
        return
    try:
        card = ModelCard.load(repo_id, token=token)  # endpoint: constants.ENDPOINT, as `api`
    except (EntryNotFoundError, RepositoryNotFoundError):
        data = ModelCardData(library_name="transformers", pipeline_tag="text-generation",
                             tags=list(dict.fromkeys(["llama", "llama-paper", "custom_code"] + list(tags or []))))
        card = ModelCard(f"---\n{data.to_yaml()}\n---\n# {repo_id}\n\nA LLaMA (Touvron et al. 2023) model saved with "
                         "`llama-paper`; load it with `trust_remote_code=True`.\n")
    card.save(path)


def upload_folder(folder: str | os.PathLike, *, repo_id: str, paths: list[str] | None = None,
                  commit_message: str | None = None, commit_description: str | None = None, create_pr: bool = False,
                  token: Any = None, private: bool | None = None, revision: str | None = None,
                  tags: list[str] | None = None, default_message: str = "Upload with llama-paper"):
    """Create the repository if needed, keep or add the card, and upload `paths` of `folder` (all when None)."""
    from huggingface_hub import HfApi, constants

    api = HfApi(endpoint=constants.ENDPOINT, library_name="transformers")
    repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    if revision and revision != "main" and not create_pr:
        api.create_branch(repo_id, branch=revision, token=token, exist_ok=True)
    ensure_card(folder, repo_id, api, token, tags)
    if paths is not None:
        paths = sorted(set(paths) | {n for n in CARD_COMPANIONS if (Path(folder) / n).is_file()})
    return api.upload_folder(repo_id=repo_id, folder_path=folder, allow_patterns=paths, token=token,
                             commit_message=commit_message or default_message, commit_description=commit_description,
                             revision=revision, create_pr=create_pr)


class KeepCardPushMixin:
    """`push_to_hub` that uploads a complete saved folder and keeps the card of the folder the object came from."""

    def save_pretrained(self, save_directory, *args: Any, push_to_hub: bool = False, **kwargs: Any):
        """transformers' save_pretrained; with push_to_hub=True the finished folder's new files and its card go up."""
        if not push_to_hub:
            return super().save_pretrained(save_directory, *args, **kwargs)
        hub = pop_hub_kwargs(kwargs, save_directory)
        before = file_times(save_directory)
        out = super().save_pretrained(save_directory, *args, **kwargs)
        self._push_saved_folder(save_directory, before, hub)
        return out

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, commit_description: str | None = None,
                    private: bool | None = None, token: Any = None, revision: str | None = None,
                    create_pr: bool = False, max_shard_size: int | str | None = "50GB",
                    tags: list[str] | None = None, **kwargs: Any):
        """Save into a temporary folder, add the source folder's card and companions, upload; returns CommitInfo."""
        with tempfile.TemporaryDirectory(prefix="llama-paper-push-") as tmp:
            if hasattr(self, "state_dict"):  # a model: shard size applies
                self.save_pretrained(tmp, max_shard_size=max_shard_size)
            else:
                self.save_pretrained(tmp)
            copy_card_files(getattr(self, "name_or_path", None) or getattr(self, "_name_or_path", None), tmp)
            return upload_folder(tmp, repo_id=repo_id, commit_message=commit_message,
                                 commit_description=commit_description, create_pr=create_pr, token=token,
                                 private=private, revision=revision, tags=tags,
                                 default_message=f"Upload {type(self).__name__}")

    def _push_saved_folder(self, save_directory: str | os.PathLike, before: dict[str, float],
                           hub: dict[str, Any]):
        """Upload what a save_pretrained(push_to_hub=True) call wrote (plus the folder's card), as transformers does."""
        after = file_times(save_directory)
        changed = [p for p, t in after.items() if before.get(p) != t]
        return upload_folder(save_directory, paths=changed, default_message=f"Upload {type(self).__name__}", **hub)


__all__ = ["KeepCardPushMixin", "upload_folder", "copy_card_files", "pop_hub_kwargs", "file_times", "CARD_COMPANIONS"]
