"""WinoGender (Rudinger et al. 2018): does the pronoun refer to the occupation or the participant?

Harness: lm-eval `winogender_all` (`{sentence} ‘{Pronoun}’ refers to the`, choices occupation/participant, acc).
Paper: the paper (§5.3) compares the likelihood of "the occupation" and "the participant" after the same cue, so
the prompt is kept; `acc_char` decides (the paper's general rule).
"""

from dataclasses import replace

from .base import DataSource, Task

HARNESS = Task(
    name="winogender",
    source=DataSource("oskarvanderwal/winogender", "all", "test", "winogender.jsonl",
                      ("sentence", "pronoun", "occupation", "participant", "label")),
    output_type="multiple_choice",
    doc_to_text=lambda d: f"{d['sentence']} ‘{d['pronoun'].capitalize()}’ refers to the",
    doc_to_choice=lambda d: [d["occupation"], d["participant"]],
    doc_to_target=lambda d: int(d["label"]),
    metrics=("acc",),
)
PAPER = replace(HARNESS, protocol="paper", metrics=("acc_char", "acc"))
