"""HumanEval (Chen et al. 2021): complete a Python function; the program runs against its unit tests.

Harness: lm-eval `humaneval` (prompt = the function header, greedy, max 1024 tokens, stop at a new top-level
`class`/`def`/`#`/`if`/`print`; program = prompt + completion, test = `test + check(entry_point)`; pass@1).
Paper: pass@1 from samples at temperature 0.1 and pass@100 from samples at 0.8, unbiased estimator of Chen et al.;
the paper does not give n, we draw `--num-samples` (default 200, as Codex) per temperature.
Code runs only with --allow-code-execution (or HF_ALLOW_CODE_EVAL=1), each program in `sandbox.run_program`.
"""

from dataclasses import replace

from .base import DataSource, Task

HARNESS = Task(
    name="humaneval",
    source=DataSource("openai/openai_humaneval", None, "test", "humaneval.jsonl",
                      ("task_id", "prompt", "test", "entry_point")),
    output_type="generate_until",
    doc_to_text=lambda d: d["prompt"],
    doc_to_target=lambda d: f"{d['test']}\ncheck({d['entry_point']})",
    generation={"until": ["\nclass", "\ndef", "\n#", "\nif", "\nprint"], "max_gen_toks": 1024, "do_sample": False},
    filters=(("create_test", lambda text: text),),
    metrics=("pass@1",),
)
PAPER = replace(
    HARNESS, protocol="paper",
    generation={**HARNESS.generation, "code_samples": ((0.1, (1,)), (0.8, (100,))), "n": 200},
    metrics=("pass@k",),
)


def program(doc: dict, completion: str) -> str:
    """The program lm-eval runs: prompt + completion."""
    return doc["prompt"] + completion
