"""CrowS-Pairs English (Nangia et al. 2020): is the more stereotypical sentence of a pair more likely?

Harness: lm-eval `crows_pairs_english`: empty context (BOS only), each whole sentence scored, no delimiter;
`likelihood_diff` = |ll_more − ll_less| and `pct_stereotype` = 1[ll_more > ll_less] (lower is better). Paper: the
paper compares the two sentences' likelihoods the same way (Table 12 reports the stereotype percentage).
"""

from dataclasses import replace

from .base import DataSource, Task

HARNESS = Task(
    name="crows_pairs_english",
    source=DataSource("jannalu/crows_pairs_multilingual", "english", "test", "crows_pairs.jsonl",
                      ("sent_more", "sent_less")),
    output_type="multiple_choice",
    doc_to_text=lambda d: "",
    doc_to_choice=lambda d: [d["sent_more"], d["sent_less"]],
    doc_to_target=lambda d: 0,
    target_delimiter="",
    metrics=("likelihood_diff", "pct_stereotype"),
)
PAPER = replace(HARNESS, protocol="paper")
