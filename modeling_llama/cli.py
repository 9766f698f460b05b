"""The `llama-paper` command: one CLI whose subcommands each package contributes.

Subcommands are discovered through the entry-point group `llama_paper.commands` (see setup.cfg): each entry
points at a function `register(subparsers)` that adds one sub-parser and sets `func`. The model package therefore
never imports `training` or `evaluation`; they plug themselves in.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from pathlib import Path

ENTRY_POINT_GROUP = "llama_paper.commands"
# Errors that mean "bad input" (a missing file, a wrong value, a folder that already holds a model): one line naming
# the problem and exit code 2, never a traceback. Every subcommand raises these with a message that says the fix.
USER_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError, KeyError, ImportError)


def names_a_local_path(name: str) -> bool:
    """Whether a --model/--tokenizer value means a local folder rather than a Hub id ("name" or "owner/name")."""
    return Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") > 1


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every installed subcommand."""
    parser = argparse.ArgumentParser(
        prog="llama-paper", description="LLaMA (Touvron et al. 2023): model, tokenizer, pre-training, evaluation."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            register = entry.load()
        except ImportError as err:  # one broken plug-in (a missing optional dependency) must not hide the others
            print(f"llama-paper: subcommand {entry.name!r} is unavailable: {err}", file=sys.stderr)
            continue
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `llama-paper ARGS`; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except USER_ERRORS as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error  # KeyError quotes its text
        print(f"llama-paper {args.command}: error: {message}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
