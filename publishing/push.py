"""`llama-paper push`: upload a saved model folder to the Hub (or any Hub-compatible endpoint) with a real card.

The folder goes up as it is (weights, both tokenizers, remote-code sources, card, loss curve, metrics, run info),
without training checkpoints and optimizer state unless `--include-checkpoints`. The card is rebuilt in the folder
first (`publishing.card.write_card`: `--results` merged in) and checked with huggingface_hub's parser, so an invalid
model-index is refused before a byte is sent. Endpoint from HF_ENDPOINT, token from HF_TOKEN / `hf auth login`.
Uploads use `HfApi.upload_folder`: files the repository already holds (same oid) are skipped, LFS objects already
stored are not sent again and, with hf_xet, chunks are deduplicated, so re-running an interrupted push resumes it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from .card import CARD, write_card

# Never part of a published model: resumable training state (checkpoint-N/ holds model+optimizer+RNG+data state),
# DeepSpeed/FSDP shards and optimizer files, caches and editor leftovers.
CHECKPOINT_PATTERNS = ["checkpoint-*/**", "checkpoint-*", "global_step*/**", "optimizer.pt", "optimizer.bin",
                       "scheduler.pt", "rng_state*.pth", "trainer_state.json", "training_args.bin", "*.tmp",
                       "runs/**", "tensorboard/**"]
ALWAYS_IGNORED = [".cache/**", "**/__pycache__/**", "*.pyc", ".git/**"]


class PushError(Exception):
    """A push that cannot go ahead; its message is the one line the user sees."""


def ignore_patterns(include_checkpoints: bool) -> list[str]:
    """Glob patterns (relative to the folder) left out of an upload."""
    return ALWAYS_IGNORED + ([] if include_checkpoints else CHECKPOINT_PATTERNS)


def _token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access).")
    return token


def _api():
    from huggingface_hub import HfApi, constants

    return HfApi(endpoint=constants.ENDPOINT, library_name="llama-paper")


def _check_folder(model_dir: Path) -> None:
    if not (model_dir / "config.json").is_file() and not (model_dir / "adapter_config.json").is_file():
        raise PushError(f"--model {model_dir}: no saved model there (no config.json); pass a folder written by "
                        "`llama-paper pretrain`, `finetune`, `convert-meta` or `save_pretrained`.")


def _native_export(model_dir: Path, staging: Path) -> Path:
    """The transformers-native (`model_type: llama`) export of the folder, with the folder's card and results."""
    import shutil

    from modeling_llama.conversion.native import export_llama  # built in modeling_llama.conversion

    out = export_llama(model_dir, staging / "llama", overwrite=True)
    for name in (CARD, "eval_results.json", "loss_curve.png", "run_info.json", "metrics.jsonl", "summary.json",
                 "finetune_summary.json", "LICENSE"):
        if (model_dir / name).is_file() and not (out / name).is_file():
            shutil.copy2(model_dir / name, out / name)
    return out


def push(model_dir: str | Path, repo_id: str, *, results: list[str] | None = None, private: bool = False,
         revision: str | None = None, commit_message: str | None = None, create_pr: bool = False,
         format: str = "ours", include_checkpoints: bool = False, license: str | None = None,
         base_model: str | None = None, base_model_relation: str | None = None) -> dict[str, Any]:
    """Upload `model_dir` to `repo_id`; returns {"url", "commit_url", "commit_oid", "pr_url"}."""
    model_dir = Path(model_dir)
    _check_folder(model_dir)
    if "/" not in repo_id:
        raise PushError(f"--repo-id {repo_id!r} must be NAMESPACE/NAME (your user or organisation name first).")
    options = {"license": license, "base_model": base_model, "base_model_relation": base_model_relation}
    # The card is rebuilt and validated before the network is touched: a bad model-index never reaches the Hub.
    card = write_card(model_dir, results=results or [], model_name=repo_id, **options)
    if license == "meta-llama" and not (model_dir / "LICENSE").is_file():
        print(f"llama-paper push: warning: the card links Meta's licence as LICENSE but {model_dir} has no LICENSE "
              "file; put Meta's licence text there.", file=sys.stderr)
    token = _token()
    with tempfile.TemporaryDirectory(prefix="llama-paper-push-") as staging:
        folder = _native_export(model_dir, Path(staging)) if format == "llama" else model_dir
        if format == "llama":
            write_card(folder, model_name=repo_id, **options)  # the export's card: native usage, no remote code
        return _upload(folder, repo_id, token=token, private=private, revision=revision, create_pr=create_pr,
                       commit_message=commit_message or f"Upload {card.parent.name} with llama-paper push",
                       include_checkpoints=include_checkpoints)


def _upload(folder: Path, repo_id: str, *, token: str, private: bool, revision: str | None, create_pr: bool,
            commit_message: str, include_checkpoints: bool) -> dict[str, Any]:
    api = _api()
    url = api.create_repo(repo_id, private=private, exist_ok=True, token=token)
    if revision and revision != "main" and not create_pr:
        api.create_branch(repo_id, branch=revision, token=token, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message, token=token,
                             revision=revision, create_pr=create_pr,
                             ignore_patterns=ignore_patterns(include_checkpoints))
    return {"url": str(url), "commit_url": info.commit_url, "commit_oid": info.oid, "pr_url": info.pr_url}


def push_at_end(folder: str | Path, repo_id: str, *, command: str, **options: Any) -> int:
    """`--push-to-hub REPO` of pretrain/finetune: push the final folder (main process only); returns the exit code."""
    import os

    if int(os.environ.get("RANK", "0")) != 0:  # under a launcher every rank runs the command; one pushes
        return 0
    try:
        out = push(folder, repo_id, **options)
    except Exception as err:  # the run's folder is safe on disk: say how to retry, no traceback
        print(f"llama-paper {command}: error: the run finished but the push failed: {explain(err)} Retry with "
              f"`llama-paper push --model {folder} --repo-id {repo_id}`.", file=sys.stderr)
        return 2
    print(f"Pushed to {out['url']}")
    return 0


def explain(error: BaseException) -> str:
    """One line for a failed push: the problem and the fix, no traceback."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    endpoint = constants.ENDPOINT
    if isinstance(error, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set: unset it to push (the endpoint is " + endpoint + ")."
    # huggingface_hub's transport (httpx, or httpx2 in 2.5) is matched by class name, not by module.
    transport = {"ConnectError", "TransportError", "TimeoutException", "NetworkError"}
    if "xet-write-token" in str(error):  # hf_xet installed, endpoint without Xet storage (e.g. the local Hub)
        return (f"the endpoint {endpoint} does not offer Xet storage; set HF_HUB_DISABLE_XET=1 to upload through "
                "LFS (the local Hub, `python -m publishing.local_hub`, needs it).")
    if isinstance(error, ConnectionError) or transport & {c.__name__ for c in type(error).__mro__}:
        return f"cannot reach the Hub endpoint {endpoint} ({type(error).__name__}); check HF_ENDPOINT and the network."
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            return f"the endpoint {endpoint} refused the token (HTTP {status}); use a token with write access."
        return f"the Hub endpoint {endpoint} answered: {str(error).splitlines()[0]}"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def register(subparsers: Any) -> None:
    """Add the `push` sub-command (entry point `llama_paper.commands`)."""
    p = subparsers.add_parser("push", help="upload a model folder to the Hub with its card, loss curve and results",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the saved model folder")
    p.add_argument("--repo-id", required=True, help="NAMESPACE/NAME on the Hub")
    p.add_argument("--results", nargs="*", default=[], metavar="RESULTS_JSON",
                   help="`llama-paper eval` results.json files to merge into the card's model-index")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", default=None, help="branch to push to (created from main if missing)")
    p.add_argument("--commit-message", default=None)
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    p.add_argument("--format", choices=("ours", "llama"), default="ours",
                   help="ours: the folder as it is (remote code); llama: the transformers-native export")
    p.add_argument("--include-checkpoints", action="store_true",
                   help="also upload checkpoint-*/ folders and optimizer state")
    p.add_argument("--license", default=None,
                   help="licence id for the card (e.g. apache-2.0, mit); 'meta-llama' for Meta's weights "
                        "(license: other + llama-license, linked to the folder's LICENSE)")
    p.add_argument("--base-model", default=None, help="Hub id of the model this one was fine-tuned/converted from")
    p.add_argument("--base-model-relation", default=None, choices=("finetune", "adapter", "merge", "quantized"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Push and print the repository URL; one clear line and exit code 2 on failure."""
    try:
        out = push(args.model, args.repo_id, results=args.results, private=args.private, revision=args.revision,
                   commit_message=args.commit_message, create_pr=args.create_pr, format=args.format,
                   include_checkpoints=args.include_checkpoints, license=args.license, base_model=args.base_model,
                   base_model_relation=args.base_model_relation)
    except Exception as err:  # every failure is one line: the user needs the fix, not a traceback
        print(f"llama-paper push: error: {explain(err)}", file=sys.stderr)
        return 2
    print(out["url"])
    if out.get("pr_url"):
        print(f"Pull request: {out['pr_url']}")
    return 0


__all__ = ["push", "push_at_end", "register", "main", "ignore_patterns", "explain", "PushError"]


def main(argv: list[str] | None = None) -> int:
    """`python -m publishing.push ARGS`: the same command without loading every `llama-paper` subcommand."""
    parser = argparse.ArgumentParser(prog="python -m publishing.push")
    register(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["push", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    raise SystemExit(main())
