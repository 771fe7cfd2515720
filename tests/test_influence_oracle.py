"""The engine against the brute-force oracle (tests/oracle.py) on tiny random models.

Per-example, per-layer influences must agree to 1e-5 relative to the largest magnitude, for
every architecture, `text` and `prompt/completion` data, every estimator and --params choice, and
both DataInf modes (streaming and cached)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ARCHITECTURES, PAIRS, TEXTS
from oracle import oracle_block_influence

import layerif
from layerif.data import Example, encode_examples
from layerif.models import discover_blocks

MAX_LENGTH = 48  # short enough that some texts and prompts are truncated


def _data(kind: str):
    if kind == "text":
        train = [Example(f"text[{i}]", text=t) for i, t in enumerate(TEXTS)]
        val = [Example(f"val[{i}]", prompt=p, completion=c) for i, (p, c) in enumerate(PAIRS[:3])]
    else:
        train = [Example(f"pair[{i}]", prompt=p * 3, completion=c) for i, (p, c) in
                 enumerate(PAIRS)]
        val = [Example(f"val[{i}]", text=t) for i, t in enumerate(TEXTS[:3])]
    return train, val


CASES = [
    (est, mode)
    for est, modes in (("datainf", ("streaming", "cached")), ("tracin", ("auto",)),
                       ("exact", ("auto",)))
    for mode in modes
]


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("kind", ["text", "pair"])
@pytest.mark.parametrize("params", ["all", "attn", "mlp"])
def test_engine_matches_oracle(arch, kind, params, tiny_models, tokenizer):
    model = tiny_models(arch)
    train, val = _data(kind)
    blocks = discover_blocks(model, params)
    train_enc = encode_examples(train, tokenizer, MAX_LENGTH)
    val_enc = encode_examples(val, tokenizer, MAX_LENGTH)
    for estimator, mode in CASES:
        expected = oracle_block_influence(model, blocks, train_enc, val_enc, estimator)
        result = layerif.score_layers(
            model, train, val, tokenizer=tokenizer, estimator=estimator, params=params,
            mode=mode, batch_size=4, max_length=MAX_LENGTH, progress=False,
        )
        assert result.influence.shape == (len(train), len(blocks))
        scale = np.abs(expected).max()
        assert scale > 0
        err = np.abs(result.influence - expected).max() / scale
        assert err < 1e-5, f"{arch}/{kind}/{params}/{estimator}/{mode}: rel. error {err:.2e}"


def test_oracle_detects_a_wrong_estimator(tiny_models, tokenizer):
    """The comparison has teeth: DataInf and TracIn differ far beyond the tolerance."""
    model = tiny_models("llama")
    train, val = _data("text")
    a = layerif.score_layers(model, train, val, tokenizer=tokenizer, estimator="datainf",
                             max_length=MAX_LENGTH, progress=False).influence
    b = layerif.score_layers(model, train, val, tokenizer=tokenizer, estimator="tracin",
                             max_length=MAX_LENGTH, progress=False).influence
    a, b = a / np.abs(a).max(), b / np.abs(b).max()
    assert np.abs(a - b).max() > 1e-2
