"""The paper's mixture over RedPajama-Data-1T's own files, written from its `urls.txt` or from a local copy.

Why: `togethercomputer/RedPajama-Data-1T` is a script-based Hub dataset, which `datasets` >= 4 no longer runs, so
`configs/mixtures/paper_redpajama.yaml` cannot load it by name. The same data is 2,084 jsonl files listed in
https://data.together.xyz/redpajama-data-1T/v1.0.0/urls.txt, one top folder per source (`arxiv`, `book`, `c4`,
`common_crawl/<dump>`, `github`, `stackexchange`, `wikipedia`: the dataset's config names). This module writes the
paper mixture again (same source names, Table 1 weights and cleaners) with each source as `dataset: json` over its
files: URLs, streamed over HTTP, or the paths of a local copy (the `<source>/...` layout that `wget -x` or
RedPajama's download script leaves).

    llama-paper redpajama-mixture urls.txt --output paper_urls.yaml
    llama-paper redpajama-mixture /data/redpajama --output paper_local.yaml
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import yaml

from .mixture import paper_mixture_path

URLS_TXT = "https://data.together.xyz/redpajama-data-1T/v1.0.0/urls.txt"
DATA_SUFFIXES = (".jsonl", ".jsonl.zst", ".jsonl.gz", ".json", ".json.gz")


def list_files(listing: str | os.PathLike) -> list[str]:
    """The data files of a RedPajama copy: the lines of a urls.txt-like file, or the jsonl files under a folder."""
    listing = Path(listing)
    if listing.is_dir():
        return sorted(str(path.resolve()) for path in listing.rglob("*")
                      if path.is_file() and path.name.endswith(DATA_SUFFIXES))
    if not listing.is_file():
        raise FileNotFoundError(f"{listing} does not exist. Pass RedPajama's urls.txt ({URLS_TXT}) or the folder "
                                "holding a local copy of its files.")
    lines = (line.strip() for line in listing.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def source_folder(entry: str, known: set[str]) -> str | None:
    """The RedPajama source a file belongs to: the last folder of its path that names one (None if none does)."""
    path = urlparse(entry).path if "://" in entry else Path(entry).as_posix()
    folders = PurePosixPath(path).parent.parts
    return next((part for part in reversed(folders) if part in known), None)


def redpajama_mixture(listing: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the paper's mixture with each source reading its RedPajama files; returns the YAML's path."""
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it or choose another --output.")
    paper = yaml.safe_load(paper_mixture_path().read_text(encoding="utf-8"))
    folders = {source["config"]: source for source in paper["sources"]}
    files = list_files(listing)
    grouped: dict[str, list[str]] = {folder: [] for folder in folders}
    known = set(folders)
    for entry in files:
        folder = source_folder(entry, known)
        if folder is not None:
            grouped[folder].append(entry)
    missing = [folder for folder, entries in grouped.items() if not entries]
    if missing:
        raise ValueError(f"{listing} has no files for {', '.join(f'{m}/' for m in missing)} ({len(files)} files "
                         f"listed). Pass the complete urls.txt ({URLS_TXT}) or a complete local copy.")
    sources = []
    for folder, source in folders.items():
        entry = {key: value for key, value in source.items() if key not in ("dataset", "config", "data_files")}
        sources.append({**entry, "dataset": "json", "data_files": grouped[folder], "streaming": True})
    mixture = {key: value for key, value in paper.items() if key != "sources"}
    mixture["name"] = f"{paper['name']}_files"
    mixture["sources"] = sources
    header = (f"# The paper's Table 1 mixture over RedPajama-Data-1T's files, written by `llama-paper "
              f"redpajama-mixture {listing}`.\n# Weights and cleaners: {paper_mixture_path().name}.\n")
    temporary = output.with_name(f".{output.name}.tmp")
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary.write_text(header + yaml.safe_dump(mixture, sort_keys=False, width=120), encoding="utf-8")
    temporary.replace(output)
    return output


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `redpajama-mixture` subcommand."""
    parser = subparsers.add_parser("redpajama-mixture", help="Write the paper's mixture over RedPajama's files.",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("listing", help=f"RedPajama's urls.txt ({URLS_TXT}) or the folder of a local copy")
    parser.add_argument("--output", required=True, help="the mixture YAML to write (use it with --mixture)")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    path = redpajama_mixture(args.listing, args.output, args.overwrite)
    sources = yaml.safe_load(path.read_text(encoding="utf-8"))["sources"]
    for source in sources:
        print(f"{source['name']:>14}: {len(source['data_files']):5d} files, weight {source['weight']}")
    print(f"Wrote {path}; train on it with: llama-paper pretrain --preset 7B --mixture {path}")
    compressed = any(f.endswith(".zst") for source in sources for f in source["data_files"])
    if compressed and importlib.util.find_spec("zstandard") is None:
        print("Note: some files are zstd-compressed (.zst); `datasets` reads them once `pip install zstandard`.",
              file=sys.stderr)
    return 0


__all__ = ["list_files", "redpajama_mixture", "source_folder", "URLS_TXT"]
