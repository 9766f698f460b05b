"""OUT/report.json and OUT/report.md: per source and step, documents and bytes in/out, drop reasons, tokens, disk
size, and the columns of the paper's Table 1 (sampling proportion, epochs, disk size)."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

from .config import DataConfig
from .sources import EDITS_FOLDER

PAPER_TOKENS = 1.4e12  # the 33B/65B models' training tokens (§2.1): Table 1's epochs are over this budget


def _jsonl_records(folder: Path):
    for path in sorted(folder.glob("*.jsonl*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)


def _count(folder: Path) -> tuple[int, int, Counter]:
    docs = size = 0
    reasons: Counter = Counter()
    for record in _jsonl_records(folder):
        docs += 1
        size += len(record.get("text", "").encode("utf-8"))
        reasons[(record.get("metadata") or {}).get("filter_reason") or folder.name] += 1
    return docs, size, reasons


def _reader_stats(logs: Path) -> tuple[int | None, int | None]:
    """Documents and bytes of text the source's first stage read (datatrove's reader stats)."""
    stats_file = logs / "filter" / "stats.json"
    if not stats_file.is_file():
        return None, None
    for step in json.loads(stats_file.read_text()):
        if "READER" in step.get("name", "") or "Reader" in step.get("name", ""):
            stats = step.get("stats", {})
            docs = stats.get("documents", {})
            length = stats.get("doc_len", {})
            docs = docs.get("total") if isinstance(docs, dict) else docs
            return docs, length.get("total") if isinstance(length, dict) else None
    return None, None


def source_report(root: Path, name: str, weight_share: float, train_tokens: float) -> dict:
    """One source's row: inputs, outputs, drops per step and reason, tokens and disk sizes."""
    docs_in, bytes_in = _reader_stats(root / "logs" / name)
    docs_out, bytes_out, _ = _count(root / "docs" / name)
    steps, edited = {}, {}
    for folder in sorted((root / "excluded" / name).glob("*")):
        dropped, dropped_bytes, reasons = _count(folder)
        if folder.name == EDITS_FOLDER:  # documents kept with some lines removed, not dropped ones
            edited[folder.name] = dropped
            continue
        steps[folder.name] = {"documents_dropped": dropped, "bytes_dropped": dropped_bytes, "reasons": dict(reasons)}
    tokens = documents_tokenized = 0
    for meta in sorted((root / "tokens" / name).glob("*.ds.metadata")):
        data = json.loads(meta.read_text())
        tokens += data["tokens"]
        documents_tokenized += data["documents"]
    shard_bytes = sum(p.stat().st_size for p in (root / "tokens" / name).glob("*.ds"))
    return {"documents_in": docs_in, "bytes_in": bytes_in, "documents_out": docs_out, "bytes_out": bytes_out,
            "documents_dropped": sum(s["documents_dropped"] for s in steps.values()), "steps": steps,
            "documents_edited": edited,
            "tokens": tokens, "documents_tokenized": documents_tokenized, "token_shard_bytes": shard_bytes,
            "sampling_proportion": weight_share, "disk_size_bytes": bytes_out,
            "epochs": (weight_share * train_tokens / tokens) if tokens else None}


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def markdown_table(report: dict) -> str:
    """Table 1's columns (dataset, sampling prop., epochs, disk size) plus the pipeline's counts."""
    lines = [f"Data report for `{report['name']}` (epochs over {report['train_tokens']:.3g} training tokens)", "",
             "| Dataset | Sampling prop. | Epochs | Disk size | Docs in | Docs out | Dropped (reasons) | Tokens |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    for name, row in report["sources"].items():
        reasons = ", ".join(f"{step}/{reason} {n}" for step, s in row["steps"].items()
                            for reason, n in s["reasons"].items()) or "none"
        epochs = "-" if row["epochs"] is None else f"{row['epochs']:.3g}"
        lines.append(f"| {name} | {100 * row['sampling_proportion']:.1f}% | {epochs} | {_size(row['disk_size_bytes'])} "
                     f"| {row['documents_in'] if row['documents_in'] is not None else '-'} | {row['documents_out']} "
                     f"| {row['documents_dropped']} ({reasons}) | {row['tokens']:,} |")
    return "\n".join(lines) + "\n"


def write_report(config: DataConfig, output_dir: str | Path, sources: list[str] | None = None,
                 train_tokens: float = PAPER_TOKENS) -> dict:
    """Write OUT/report.json and OUT/report.md for the sources that have outputs; returns the report."""
    root = Path(output_dir)
    total = sum(s.weight for s in config.sources) or 1.0
    rows = {s.name: source_report(root, s.name, s.weight / total, train_tokens) for s in config.sources
            if any((root / "docs" / s.name).glob("*.jsonl*")) or any((root / "tokens" / s.name).glob("*.ds"))}
    report = {"name": config.name, "train_tokens": train_tokens, "sources": rows}
    (root / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (root / "report.md").write_text(markdown_table(report))
    return report
