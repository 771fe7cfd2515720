"""Examples and the file formats they come from (JSONL, JSON, CSV).

An example is either a plain `text` (every predicted token counts in the loss) or a
`prompt`/`completion` pair (only the completion's tokens count).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..io import read_utf8

FILE_SUFFIXES = (".jsonl", ".json", ".csv")
_FIX = 'each record needs "text", or "prompt" and "completion" (strings)'


@dataclass(frozen=True)
class Example:
    """One training or validation example; `origin` says where it came from (file:line, task[i])."""

    origin: str
    text: str | None = None
    prompt: str | None = None
    completion: str | None = None

    @property
    def is_pair(self) -> bool:
        return self.completion is not None


def example_from_record(record: object, origin: str) -> Example:
    """Validate one record (a dict from a file) into an Example, or raise DataError naming it."""
    if not isinstance(record, dict):
        raise DataError(f"{origin}: expected an object, got {type(record).__name__}; {_FIX}.")
    fields = {}
    for key in ("text", "prompt", "completion"):
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            raise DataError(
                f"{origin}: field {key!r} is {type(value).__name__}, not a string; {_FIX}."
            )
        fields[key] = value
    if fields["text"] is not None and fields["completion"] is None:
        if not fields["text"]:
            raise DataError(f"{origin}: field 'text' is empty; remove the record or fill it.")
        return Example(origin, text=fields["text"])
    if fields["prompt"] is not None and fields["completion"] is not None:
        if not fields["completion"]:
            raise DataError(f"{origin}: field 'completion' is empty; nothing would be scored.")
        return Example(origin, prompt=fields["prompt"], completion=fields["completion"])
    present = sorted(k for k in record if isinstance(k, str))
    raise DataError(f"{origin}: record has fields {present}; {_FIX}.")


def load_file(path: str | Path) -> list[Example]:
    """Read examples from a .jsonl, .json (a list of records) or .csv (with a header) file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file.")
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise DataError(f"{path}: unknown file type {suffix!r}; use one of {FILE_SUFFIXES}.")
    content = read_utf8(path, DataError)
    if not content.strip():
        raise DataError(f"{path}: the file is empty; it needs at least one record ({_FIX}).")
    reader = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv}[suffix]
    examples = [example_from_record(rec, origin) for origin, rec in reader(path, content)]
    if not examples:
        raise DataError(f"{path}: no records found ({_FIX}).")
    return examples


def _read_jsonl(path: Path, content: str):
    for lineno, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); "
                "a .jsonl file holds one JSON object per line."
            ) from exc
        yield f"{path}:{lineno}", record


def _read_json(path: Path, content: str):
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})."
        ) from exc
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f'{path}: expected a JSON list of records (or {{"data": [...]}}).')
    for i, record in enumerate(data):
        yield f"{path}[{i}]", record


def _read_csv(path: Path, content: str):
    reader = csv.DictReader(content.splitlines())
    if not reader.fieldnames:
        raise DataError(f"{path}: no header row; {_FIX}.")
    for row in reader:
        # DictReader's line_num is the physical line just read (the header is line 1).
        record = {k: v for k, v in row.items() if k is not None}
        if None in row:
            raise DataError(f"{path}:{reader.line_num}: more values than header columns.")
        yield f"{path}:{reader.line_num}", record
