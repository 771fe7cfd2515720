"""Data: examples from files or built-in tasks, and the tokenisation/loss contract."""

from .encode import (
    IGNORE_INDEX,
    Batch,
    EncodedExample,
    batch_losses,
    encode_example,
    encode_examples,
    make_batches,
    per_example_loss,
    predicting_positions,
)
from .instruct import (
    ALPACA_PROMPT,
    InstructItem,
    extract_answer,
    instruct_item,
    load_examples_as,
    load_instruct,
)
from .records import Example, example_from_record, load_file
from .sources import TaskSpec, load_examples, load_rows, load_task
from .tasks import TASKS, MultipleChoice, TaskConfig, get_task

__all__ = [
    "ALPACA_PROMPT",
    "InstructItem",
    "extract_answer",
    "instruct_item",
    "load_examples_as",
    "load_instruct",
    "IGNORE_INDEX",
    "TASKS",
    "Batch",
    "EncodedExample",
    "Example",
    "batch_losses",
    "MultipleChoice",
    "TaskConfig",
    "TaskSpec",
    "encode_example",
    "encode_examples",
    "example_from_record",
    "get_task",
    "load_examples",
    "load_file",
    "load_rows",
    "load_task",
    "make_batches",
    "per_example_loss",
    "predicting_positions",
]
