"""Named hub corpora (wikitext2, c4) and .txt files as perplexity and calibration text. The hub
is not reachable in tests: `datasets.load_dataset` is replaced by a recorder returning known
rows, so what is asserted is the request (the literature's dataset, config and split) and what
layerif does with the rows; offline, the real call fails and the error names the alternative."""

from __future__ import annotations

import json
import math

import datasets
import pytest
import torch

from layerif.cli import main
from layerif.data.calibration import calibration_samples, perplexity_text, source_texts
from layerif.data.provenance import content_set
from layerif.errors import DataError
from layerif.evaluation.perplexity import default_seqlen


@pytest.fixture
def fake_hub(monkeypatch):
    calls = []

    def load_dataset(path, name=None, split=None, data_files=None):
        calls.append((path, name, split, data_files))
        n = 1200 if path == "allenai/c4" else 5
        return {"text": [f"document {i} " + "word " * (3 + i % 40) for i in range(n)]}

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_wikitext2_is_the_raw_test_split_joined_with_blank_lines(fake_hub):
    text, max_windows = perplexity_text("wikitext2")
    assert fake_hub == [("wikitext", "wikitext-2-raw-v1", "test", None)]
    rows = [f"document {i} " + "word " * (3 + i % 40) for i in range(5)]
    assert text == "\n\n".join(rows) and max_windows is None


def test_c4_perplexity_is_1100_validation_documents_and_256_windows(fake_hub):
    text, max_windows = perplexity_text("c4")
    assert fake_hub == [("allenai/c4", None, "validation",
                         {"validation": "en/c4-validation.00000-of-00008.json.gz"})]
    assert text.count("document ") == 1100 and max_windows == 256
    assert text.startswith("document 0 word") and " document 1 " in text  # joined by spaces


def test_c4_calibration_draws_one_window_per_long_document(fake_hub, tokenizer):
    windows = calibration_samples(tokenizer, "c4", nsamples=6, seqlen=20, seed=0)
    assert fake_hub[0][2] == "train" and fake_hub[0][3] == {
        "train": "en/c4-train.00000-of-01024.json.gz"}
    assert len(windows) == 6 and all(w.shape == (20,) for w in windows)
    again = calibration_samples(tokenizer, "c4", nsamples=6, seqlen=20, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(windows, again, strict=True))
    other = calibration_samples(tokenizer, "c4", nsamples=6, seqlen=20, seed=1)
    assert not all(torch.equal(a, b) for a, b in zip(windows, other, strict=True))
    # every window is a contiguous piece of one document
    docs = [tokenizer(t, add_special_tokens=False)["input_ids"]
            for t in datasets.load_dataset("allenai/c4", split="train")["text"]]
    for w in windows:
        w = w.tolist()
        assert any(any(d[i : i + 20] == w for i in range(len(d) - 19)) for d in docs
                   if len(d) > 20)


def test_hub_corpora_offline_name_the_local_alternative(monkeypatch):
    def offline(*_a, **_k):
        raise ConnectionError("Couldn't reach 'wikitext' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"wikitext2: the hub dataset wikitext/wikitext-2-raw-v1 "
                       r"\(test\) could not be loaded .*wiki\.test\.raw.*sciq:validation"):
        source_texts("wikitext2")
    with pytest.raises(DataError, match="c4: .* give a local .txt or .jsonl of C4 documents"):
        content_set("c4", "calibration")


def test_a_txt_file_gives_the_direct_perplexity(tiny_models, tiny_dir, tokenizer, tmp_path):
    model = tiny_models("llama")  # the weights saved in tiny_dir
    text = "Plants make sugar from light.\n\nWater boils at 100 degrees.\n\n" * 8
    path = tmp_path / "held.txt"
    path.write_text(text)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    n = len(ids) // 24
    with torch.no_grad():
        nll = sum(float(torch.nn.functional.cross_entropy(
            model(torch.tensor([ids[i * 24 : (i + 1) * 24]])).logits[0, :-1],
            torch.tensor(ids[i * 24 + 1 : (i + 1) * 24]), reduction="sum")) for i in range(n))
    out = tmp_path / "r.json"
    assert main(["eval", "--model", str(tiny_dir), "--tasks", "arc_easy", "--slice", "0:2",
                 "--ppl", str(path), "--ppl", str(calib_copy(path)),
                 "--ppl-seqlen", "24", "--quiet", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["perplexity"]
    got = result[str(path)]
    assert got["windows"] == n and got["window"] == 24 and len(result) == 2
    assert got["perplexity"] == pytest.approx(math.exp(nll / (23 * n)), rel=1e-5)
    assert content_set(str(path), "perplexity").n == 16  # its paragraphs are its content keys


def calib_copy(path):
    """A second perplexity file, overlapping the first (perplexity sets may): several sets in
    one call."""
    other = path.with_name("other.txt")
    other.write_text(path.read_text().upper() + "\n\nA third paragraph.")
    return other


def test_default_window_is_the_context_capped_at_2048(tiny_models):
    model = tiny_models("llama")
    assert default_seqlen(model) == 256  # the tiny config's max_position_embeddings
    model.config.max_position_embeddings = 8192
    assert default_seqlen(model) == 2048
    model.config.max_position_embeddings = 256
