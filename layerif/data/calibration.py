"""Plain text for pruning calibration and perplexity, and the calibration windows.

The defaults are SciQ's support paragraphs: science prose that no default scoring slice or
evaluation task reads, split into a calibration part and a held perplexity part (SciQ has no
repeated paragraph, so the two are disjoint by content; SciQ's own default evaluation slice, its
last 200 rows, is disjoint from both). BoolQ passages, the earlier default, repeat across rows
(2,938 passages in 3,270 rows), so no row range of BoolQ is disjoint from the others by content.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

# Imported inside the functions that use them: the CLI's parsers import this module
# and must not wait for torch (tests/test_startup.py).
if TYPE_CHECKING:
    import torch

from ..errors import DataError
from .corpora import CORPORA, corpus_calibration, corpus_texts, is_text_file, text_file
from .records import FILE_SUFFIXES, load_file
from .sources import TaskSpec, task_rows

DEFAULT_CALIBRATION = "sciq:validation[0:600]"
DEFAULT_PERPLEXITY = "sciq:validation[600:800]"


def source_texts(source: str, purpose: str = "perplexity") -> list[str]:
    """The texts of a data source, in order: a hub corpus by name (data/corpora.py: its rows
    for `purpose`, "perplexity" or "calibration"); a .txt file (one text); a data file's records
    (text, or prompt + completion); a task's shared context (each passage once, empty ones
    skipped) where the task has one, else the lm-eval prompt of each row (no answers)."""
    if source in CORPORA:
        return corpus_texts(source, purpose)
    if is_text_file(source):
        return [text_file(source)]
    if Path(source).suffix.lower() in FILE_SUFFIXES or Path(source).is_file():
        return [e.text if e.text is not None else e.prompt + e.completion
                for e in load_file(source)]
    task, rows = task_rows(TaskSpec.parse(source))
    if task.context_field:
        texts = [row[task.context_field] for _, row in rows]
        return list(dict.fromkeys(t for t in texts if t and t.strip()))
    return [task.example(row, origin).prompt for origin, row in rows]


def calibration_samples(
    tokenizer, source: str = DEFAULT_CALIBRATION, nsamples: int = 128, seqlen: int = 512,
    seed: int = 0,
) -> list[torch.Tensor]:
    """`nsamples` random windows of `seqlen` tokens from the concatenated texts of `source`
    (joined with blank lines), their starts drawn by a generator seeded with `seed`; for a hub
    corpus (c4), one window from each of randomly drawn documents, as the literature does."""
    import torch

    if nsamples < 1 or seqlen < 2:
        raise DataError(f"need nsamples >= 1 and seqlen >= 2, got {nsamples}, {seqlen}.")
    if source in CORPORA:
        return corpus_calibration(source, tokenizer, nsamples, seqlen, seed)
    ids = tokenizer("\n\n".join(source_texts(source, "calibration")), add_special_tokens=False,
                    verbose=False)["input_ids"]
    if len(ids) <= seqlen:
        raise DataError(
            f"{source}: only {len(ids)} tokens of calibration text, fewer than --seqlen "
            f"{seqlen}; give more text or a shorter --seqlen."
        )
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - seqlen, (nsamples,), generator=gen).tolist()
    flat = torch.tensor(ids)
    return [flat[s : s + seqlen].clone() for s in starts]


def perplexity_text(source: str) -> tuple[str, int | None]:
    """(the held text of `source` as one string, the most windows to score or None): a corpus's
    rows joined its own way (wikitext2 with blank lines, c4 with spaces, at most 256 windows),
    anything else's texts joined with blank lines."""
    if source in CORPORA:
        corpus = CORPORA[source]
        return corpus.join.join(corpus_texts(source)), corpus.max_windows
    return "\n\n".join(source_texts(source)), None
