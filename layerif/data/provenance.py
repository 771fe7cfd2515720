"""Which examples went where, by content, so that evaluation never sees what shaped the model.

Every example that enters scoring, calibration, fine-tuning, perplexity or evaluation is recorded
as a `ContentSet`: for each example a few content keys, each a normalised hash (whitespace runs
collapsed, case folded, SHA-256, 16 hex digits) of
- a file record: its `text`, or its `prompt + completion` and its `prompt` alone (the same
  question with any answer is the same item);
- a task row: the same two keys of its lm-eval rendering (prompt and gold answer), whatever
  format it was used in, plus its shared context field where the task has one (a BoolQ passage,
  a SciQ support paragraph), since one passage serves several questions.
Two sets overlap when they share a key. Row numbers are never compared: BoolQ's validation split
has 3,270 rows but 2,938 passages, so disjoint row ranges still share passages.

The sets travel with the artefacts (scores.json -> alloc.json -> pruning.json / training.json),
and `check_disjoint` refuses an overlap naming the colliding examples.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import DataError
from .corpora import CORPORA, corpus_texts, is_text_file, paragraphs, text_file
from .records import FILE_SUFFIXES, Example, load_file
from .sources import TaskSpec, task_rows

# Roles: scoring train, scoring val, calibration, fine-tuning, perplexity, evaluation. The pairs
# that may share content by design: LayerIF scores the fine-tuning data, and perplexity text and
# evaluation items are all evaluation (several perplexity sets may overlap one another).
# A search's fitness text may be the held text of the sensitivity it is compared with (both are
# calibration-side measurements, never evaluation).
ALLOWED = {frozenset(("scoring train", "fine-tuning")), frozenset(("perplexity", "evaluation")),
           frozenset(("perplexity",)), frozenset(("held (sensitivity)", "held (search fitness)"))}


def normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def content_hash(text: str) -> str:
    return hashlib.sha256(normalise(text).encode()).hexdigest()[:16]


def example_keys(example: Example) -> list[str]:
    if example.text is not None:
        return [content_hash(example.text)]
    return [content_hash(example.prompt + example.completion), content_hash(example.prompt)]


@dataclass
class ContentSet:
    """keys: content hash -> the origin of the (first) example that has it."""

    role: str
    source: str
    n: int
    keys: dict[str, str] = field(default_factory=dict)
    where: str = ""  # the file this set was recorded in, for messages

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("where")
        return d

    @classmethod
    def from_dict(cls, data: dict, where: str = "") -> ContentSet:
        try:
            return cls(data["role"], data["source"], int(data["n"]), dict(data["keys"]), where)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where or 'provenance'}: not a recorded content set ({exc}).") \
                from exc

    def describe(self) -> str:
        return f"the {self.role} set {self.source}" + (f" ({self.where})" if self.where else "")


def _add(keys: dict[str, str], origin: str, hashes: Iterable[str]) -> None:
    for h in hashes:
        keys.setdefault(h, origin)


def row_keys(task, row: dict, origin: str) -> list[str]:
    """The content keys of one task row (format-independent)."""
    hashes = example_keys(task.example(row, origin))
    context = row.get(task.context_field) if task.context_field else None
    if isinstance(context, str) and context.strip():
        hashes.append(content_hash(context))
    return hashes


def content_set(source: str | Sequence[Example], role: str, name: str | None = None
                ) -> ContentSet:
    """The content keys of a data file, a task spec or in-memory examples."""
    keys: dict[str, str] = {}
    if isinstance(source, (str, Path)):
        source = str(source)
        if source in CORPORA or is_text_file(source):  # plain text: a key per paragraph
            purpose = "calibration" if role == "calibration" else "perplexity"
            texts = ([t for row in corpus_texts(source, purpose) for t in paragraphs(row)]
                     if source in CORPORA else paragraphs(text_file(source)))
            for i, text in enumerate(texts):
                _add(keys, f"{source}[{i}]", [content_hash(text)])
            return ContentSet(role, source, len(texts), keys)
        if Path(source).suffix.lower() in FILE_SUFFIXES or Path(source).is_file():
            examples = load_file(source)
            for e in examples:
                _add(keys, e.origin, example_keys(e))
            return ContentSet(role, source, len(examples), keys)
        task, rows = task_rows(TaskSpec.parse(source))
        for origin, row in rows:
            _add(keys, origin, row_keys(task, row, origin))
        return ContentSet(role, source, len(rows), keys)
    for e in source:
        _add(keys, e.origin, example_keys(e))
    return ContentSet(role, name or f"<{len(source)} in-memory examples>", len(source), keys)


def overlap(a: ContentSet, b: ContentSet) -> list[tuple[str, str]]:
    """(origin in a, origin in b) for every shared key, one pair per origin in a."""
    pairs, seen = [], set()
    for h, origin in a.keys.items():
        if h in b.keys and origin not in seen:
            seen.add(origin)
            pairs.append((origin, b.keys[h]))
    return pairs


def check_disjoint(new: Sequence[ContentSet], recorded: Sequence[ContentSet]) -> None:
    """Refuse any shared content between a set in `new` and a recorded set (or another new
    set), except for the pairs of roles in ALLOWED."""
    seen = list(recorded)
    for candidate in new:
        for other in seen:
            if frozenset((candidate.role, other.role)) in ALLOWED or candidate.role == other.role \
                    and candidate.source == other.source:
                continue
            pairs = overlap(candidate, other)
            if pairs:
                examples = "; ".join(f"{a} = {b}" for a, b in pairs[:3])
                raise DataError(
                    f"the {candidate.role} set {candidate.source} shares content with "
                    f"{other.describe()}: {len(pairs)} of its {candidate.n} examples ({examples}"
                    f"{'; ...' if len(pairs) > 3 else ''}). Use data disjoint from it by content "
                    "(rows sharing a passage count): other rows, another task, or another file."
                )
        seen.append(candidate)


def sets_from(data: dict | None, where: str) -> list[ContentSet]:
    """The content sets recorded under "provenance" in a layerif JSON file."""
    return [ContentSet.from_dict(d, where) for d in (data or {}).get("provenance") or []]


def read_recorded(path: str | Path, what: str) -> dict:
    """A provenance-bearing JSON file that a recorded path points to; a missing one is an
    error, never a skip: without it the overlap check would silently pass."""
    path = Path(path)
    path = path / "scores.json" if path.is_dir() else path
    if not path.is_file():
        raise DataError(
            f"{what} records {path}, which does not exist; restore it (the overlap check needs "
            "the data it records) or redo the step that made it.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}).") from exc
