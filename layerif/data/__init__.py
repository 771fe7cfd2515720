"""Data: examples from files or built-in tasks, and the tokenisation/loss contract."""

from ..lazy import lazy_exports

# Public name -> its module, imported on first use (encode.py imports torch).
_EXPORTS = {
    "IGNORE_INDEX": "encode",
    "Batch": "encode",
    "EncodedExample": "encode",
    "batch_losses": "encode",
    "encode_example": "encode",
    "encode_examples": "encode",
    "make_batches": "encode",
    "per_example_loss": "encode",
    "predicting_positions": "encode",
    "ALPACA_PROMPT": "instruct",
    "InstructItem": "instruct",
    "extract_answer": "instruct",
    "instruct_item": "instruct",
    "load_examples_as": "instruct",
    "load_instruct": "instruct",
    "Example": "records",
    "example_from_record": "records",
    "load_file": "records",
    "TaskSpec": "sources",
    "load_examples": "sources",
    "load_rows": "sources",
    "load_task": "sources",
    "TASKS": "tasks",
    "MultipleChoice": "tasks",
    "TaskConfig": "tasks",
    "get_task": "tasks",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
