"""Social IQa (Sap et al. 2019): social commonsense, three answers.

Harness: lm-eval `social_iqa` (`Q: {context} {question}\\nA:`, acc). Paper: same prompt, `acc_char`.
"""

from dataclasses import replace

from .base import DataSource, Task

HARNESS = Task(
    name="social_iqa",
    source=DataSource("lighteval/siqa", None, "validation", "social_i_qa.jsonl",
                      ("context", "question", "answerA", "answerB", "answerC", "label"),
                      "train", "social_i_qa_train.jsonl"),
    output_type="multiple_choice",
    doc_to_text=lambda d: f"Q: {d['context']} {d['question']}\nA:",
    doc_to_choice=lambda d: [d["answerA"], d["answerB"], d["answerC"]],
    doc_to_target=lambda d: int(d["label"]) - 1,
    fewshot_excludes_eval_doc=True,  # lm-eval: no test split, so fewshot_split (None) == test_split
    metrics=("acc",),
)
PAPER = replace(HARNESS, protocol="paper", metrics=("acc_char", "acc"))
