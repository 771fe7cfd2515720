"""Instruction format for LoRA-MoE fine-tuning and generative evaluation (MoLA's recipe).

A task row becomes an Alpaca prompt (instruction, input, "### Response:") and a response that
states the answer in one of the paper's two forms:
- a label task (MRPC, RTE, BoolQ): "Answer: equivalent."
- a lettered task (CommonsenseQA, OpenBookQA, ARC, ...): the options listed as "A. ...", and
  "The answer is B."
Generative accuracy greedily decodes a response and compares the answer `extract_answer` reads
from it with the gold one (exact match after lower-casing labels); a response with no readable
answer counts as wrong.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .records import FILE_SUFFIXES, Example
from .sources import TaskSpec, load_examples, task_rows
from .tasks import TaskConfig

ALPACA_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
LETTERS = string.ascii_uppercase
_LABEL_ANSWER = re.compile(r"Answer:\s*([^.\n]*)")
_LETTER_ANSWER = re.compile(r"answer is\s*\(?([A-Z])\b", re.IGNORECASE)


@dataclass(frozen=True)
class InstructItem:
    """One row in the instruction format: `prompt` ends with "### Response:\\n"; `response` is
    the gold response; `answer` the gold label or letter; `choices` every valid answer."""

    origin: str
    prompt: str
    response: str
    answer: str
    choices: tuple[str, ...]
    lettered: bool

    def example(self) -> Example:
        return Example(self.origin, prompt=self.prompt, completion=self.response)


def instruct_item(task: TaskConfig, row: dict, origin: str) -> InstructItem:
    fmt = task.instruct
    if fmt is None:
        raise DataError(f"task {task.name!r} has no instruction format; tasks with one: "
                        f"{', '.join(instruct_tasks())}.")
    try:
        text = fmt.text(row)
        if fmt.labels is not None:
            gold = task.multiple_choice(row, origin).gold
            answer = fmt.labels[gold]
            return InstructItem(origin, ALPACA_PROMPT.format(instruction=fmt.instruction,
                                                             input=text),
                                f"Answer: {answer}.", answer, fmt.labels, lettered=False)
        if fmt.options is not None:
            options, gold = fmt.options(row)
        else:
            item = task.multiple_choice(row, origin)
            options, gold = [c.removeprefix(" ") for c in item.continuations], item.gold
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise DataError(f"{origin}: row does not have the fields task {task.name!r} expects "
                        f"({type(exc).__name__}: {exc}).") from exc
    letters = LETTERS[: len(options)]
    listed = "\n".join(f"{letter}. {option}" for letter, option in zip(letters, options,
                                                                       strict=True))
    prompt = ALPACA_PROMPT.format(instruction=fmt.instruction, input=f"{text}\n{listed}")
    return InstructItem(origin, prompt, f"The answer is {letters[gold]}.", letters[gold],
                        tuple(letters), lettered=True)


def few_shot_prompt(shots: list[InstructItem], prompt: str) -> str:
    """`prompt` after the worked examples `shots` (each its prompt and gold response), blank
    lines between: how a base model that was never tuned on the format is shown it."""
    return "".join(f"{shot.prompt}{shot.response}\n\n" for shot in shots) + prompt


def load_instruct(spec: TaskSpec | str) -> list[InstructItem]:
    """The instruction-format items of a task spec such as `mrpc:validation[0:200]`."""
    task, rows = task_rows(spec)
    return [instruct_item(task, row, origin) for origin, row in rows]


def balance_answers(items: list[InstructItem]) -> list[InstructItem]:
    """The items thinned so that every gold answer appears equally often: of each answer, the
    first m rows in row order (m: the rarest answer's count), kept in row order. An adapter
    trained on a skewed slice can score its majority share by always giving one answer; on a
    balanced one that scores chance, so only reading the input pays."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.answer] = counts.get(item.answer, 0) + 1
    if len(counts) < 2:
        raise DataError("cannot balance answers: the rows have a single gold answer.")
    keep, taken = min(counts.values()), dict.fromkeys(counts, 0)
    out = []
    for item in items:
        if taken[item.answer] < keep:
            taken[item.answer] += 1
            out.append(item)
    return out


def extract_answer(generated: str, lettered: bool) -> str | None:
    """The answer a generated response states: the letter after "answer is", or the label after
    "Answer:" (lower-cased, stripped); None when the response states none."""
    if lettered:
        m = _LETTER_ANSWER.search(generated)
        return m.group(1).upper() if m else None
    m = _LABEL_ANSWER.search(generated)
    return m.group(1).strip().lower() if m else None


def instruct_tasks() -> list[str]:
    from .tasks import TASKS

    return sorted(name for name, t in TASKS.items() if t.instruct is not None)


DATA_FORMATS = ("plain", "instruct")


def load_examples_as(source: str, fmt: str = "instruct") -> list[Example]:
    """Examples from a data file (used as written) or a task spec, read in the instruction format
    (`fmt` "instruct": what `finetune-moe` trains on) or as lm-eval's prompt and gold answer
    ("plain": what `score` uses by default)."""
    if fmt not in DATA_FORMATS:
        raise DataError(f"unknown data format {fmt!r}; use one of {', '.join(DATA_FORMATS)}.")
    if fmt == "plain" or Path(source).suffix.lower() in FILE_SUFFIXES or Path(source).is_file():
        return load_examples(source)
    return [item.example() for item in load_instruct(source)]
