"""Perplexity of a text file or dataset, scored with lm-eval's rolling windows (`loglikelihood_rolling`).

Reports `word_perplexity` = exp(−Σll / words), `byte_perplexity` = exp(−Σll / bytes) and `bits_per_byte`
= −Σll / bytes / ln 2, aggregated over documents as lm-eval does (sums before the ratio). Harness: the text is
encoded with the tokenizer defaults (LLaMA: BOS, itself scored after the prefix token, exactly as lm-eval); paper:
BOS is only the conditioning prefix, so only the text's own tokens are scored. `--data-dir DIR` reads
`perplexity.jsonl` (field `text`) or `perplexity.txt` (documents separated by blank lines); without it, the
document-level WikiText-2 test set (field `page`). This is the generic rolling protocol, not lm-eval's `wikitext`
task (which also detokenizes WikiText).
"""

from dataclasses import replace

from .base import DataSource, Task


def process_docs(docs: list[dict]) -> list[dict]:
    """Each document's text from `text` (local files) or `page` (WikiText document level)."""
    out = []
    for i, doc in enumerate(docs):
        if "text" not in doc and "page" not in doc:
            raise ValueError(f"task 'perplexity': document {i} has neither a 'text' nor a 'page' field.")
        out.append({"text": doc.get("text", doc.get("page"))})
    return out

HARNESS = Task(
    name="perplexity",
    source=DataSource("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", "test", "perplexity.jsonl", ()),
    output_type="loglikelihood_rolling",
    process_docs=process_docs,
    doc_to_text=lambda d: "",
    doc_to_target=lambda d: d["text"],
    metrics=("word_perplexity", "byte_perplexity", "bits_per_byte"),
)
PAPER = replace(HARNESS, protocol="paper")
