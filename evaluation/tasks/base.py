"""The declarative description of one benchmark (`Task`) and how a document becomes a prompt.

A task module builds one `Task` per protocol: `HARNESS` reproduces lm-evaluation-harness 0.4.13's built-in YAML
(same field names: doc_to_text, doc_to_choice, doc_to_target, target_delimiter, fewshot_delimiter, ...) and `PAPER`
is a `dataclasses.replace` of it with the LLaMA paper's rules. Prompt assembly follows lm-eval's
`fewshot_context`/`build_qa_turn`: `description + Σ shots(text + target_delimiter + answer + fewshot_delimiter) + text`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..fewshot import FewShotSampler

Doc = dict[str, Any]


@dataclass(frozen=True)
class DataSource:
    """Where a task's documents come from: a Hub dataset, or `<file>` in `--data-dir` with the same schema."""

    hub_path: str
    hub_name: str | tuple[str, ...] | None  # a tuple: configs concatenated in order
    split: str
    file: str
    fields: tuple[str, ...]
    fewshot_split: str | None = None  # Hub split of the few-shot pool (None: no pool on the Hub side)
    fewshot_file: str | None = None  # its file in --data-dir


@dataclass(frozen=True)
class Task:
    """One benchmark under one protocol; every callable takes a (processed) document."""

    name: str
    source: DataSource
    output_type: str  # "multiple_choice" | "generate_until" | "loglikelihood_rolling"
    doc_to_text: Callable[[Doc], Any]
    doc_to_target: Callable[[Doc], Any]
    doc_to_choice: Callable[[Doc], list[str]] | None = None
    process_docs: Callable[[list[Doc]], list[Doc]] | None = None
    multiple_input: bool = False  # winogrande: one context per choice, one shared continuation
    description: str | Callable[[Doc], str] = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    num_fewshot: int = 0
    fewshot_sampler: str = "default"
    fewshot_excludes_eval_doc: bool = False  # lm-eval: the few-shot split *is* the evaluated split
    fewshot_pool_by: Callable[[Doc], Any] | None = None  # mmlu: shots come from the document's own subject
    fixed_fewshot: tuple[Doc, ...] | None = None  # mbpp: hard-coded exemplars
    fewshot_doc_to_target: Callable[[Doc], Any] | None = None
    fewshot_doc_to_text: Callable[[Doc], Any] | None = None
    metrics: tuple[str, ...] = ("acc",)
    generation: dict[str, Any] = field(default_factory=dict)
    filters: tuple[tuple[str, Callable[[str], str]], ...] = ()  # (name, completion -> answer)
    match: Callable[[str, Any], float] | None = None  # (filtered answer, target) -> 0/1
    unconditional_context: str = "Answer:"  # the paper's P(c|ctx)/P(c|"Answer:") rule
    protocol: str = "harness"
    notes: str = ""

    # --- prompts -------------------------------------------------------------------------------------------
    def choices(self, doc: Doc) -> list[str]:
        """The choice strings (for winogrande, the option-filled contexts)."""
        return list(self.doc_to_choice(doc)) if self.doc_to_choice else []

    def gold(self, doc: Doc) -> int | list[int]:
        """Index (or indices) of the correct choice, as lm-eval resolves `doc_to_target`."""
        target = self.doc_to_text(doc) if self.multiple_input else self.doc_to_target(doc)
        choices = self.choices(doc)
        if isinstance(target, list):
            return [t if isinstance(t, int) else choices.index(t) for t in target]
        if isinstance(target, str):
            return choices.index(target) if target in choices else int(target)
        return int(target)

    def _answer_text(self, doc: Doc) -> str:
        target = (self.fewshot_doc_to_target or self.doc_to_target)(doc)
        if self.multiple_input:
            return target
        choices = self.choices(doc)
        if choices and isinstance(target, int):
            return choices[target]
        if isinstance(target, list):
            return target[0]  # lm-eval: a multi-target shot shows its first target
        return str(target)

    def _question_text(self, doc: Doc, shot: bool) -> str:
        if self.multiple_input:  # the shot shows the correct option filled in
            return self.choices(doc)[self.doc_to_text(doc)]
        fn = self.fewshot_doc_to_text if (shot and self.fewshot_doc_to_text) else self.doc_to_text
        return fn(doc)

    def shots_prefix(self, doc: Doc, shots: list[Doc]) -> str:
        """Description plus the rendered few-shot examples (everything before the document's own text)."""
        desc = self.description(doc) if callable(self.description) else self.description
        parts = [desc]
        for shot in shots:
            parts.append(self._question_text(shot, True) + self.target_delimiter + self._answer_text(shot))
            parts.append(self.fewshot_delimiter)
        return "".join(parts)

    def contexts(self, doc: Doc, shots: list[Doc]) -> list[str]:
        """The prompt(s): one string, or one per choice for multiple-input tasks."""
        prefix = self.shots_prefix(doc, shots)
        if self.multiple_input:
            return [prefix + c for c in self.choices(doc)]
        return [prefix + self.doc_to_text(doc)]

    def continuations(self, doc: Doc) -> list[str]:
        """The scored continuations of a multiple-choice document (delimiter included)."""
        if self.multiple_input:
            return [self.target_delimiter + self.doc_to_target(doc)]
        return [self.target_delimiter + c for c in self.choices(doc)]

    def sampler(self, pool: list[Doc], seed: int) -> "ShotDrawer":
        """The few-shot drawer for this task over `pool`, seeded like lm-eval's 4th `--seed` value."""
        return ShotDrawer(self, pool, seed)


class ShotDrawer:
    """Per-task few-shot drawing; keeps one sampler per pool key (mmlu draws within each subject)."""

    def __init__(self, task: Task, pool: list[Doc], seed: int):
        self.task = task
        self.seed = seed
        pool = list(task.fixed_fewshot) if task.fixed_fewshot is not None else pool
        self.pools: dict[Any, list[Doc]] = {}
        for d in pool:
            self.pools.setdefault(task.fewshot_pool_by(d) if task.fewshot_pool_by else None, []).append(d)
        self.samplers: dict[Any, FewShotSampler] = {}

    def draw(self, doc: Doc, n: int) -> list[Doc]:
        """The `n` shots for `doc`; must be called in document order for seeded sampling to match lm-eval."""
        if n == 0:
            return []
        key = self.task.fewshot_pool_by(doc) if self.task.fewshot_pool_by else None
        if key not in self.samplers:
            self.samplers[key] = FewShotSampler(self.pools.get(key, []), kind=self.task.fewshot_sampler, seed=self.seed)
        return self.samplers[key].sample(n, doc if self.task.fewshot_excludes_eval_doc else None)
