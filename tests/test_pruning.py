"""Block-by-block calibration and the three pruners."""

from __future__ import annotations

import pytest
import torch
from conftest import ARCHITECTURES, TEXTS, build_tiny_model

from layerif.errors import LayerIFError
from layerif.models import discover_blocks
from layerif.pruning import (
    capture_block_inputs,
    magnitude_prune,
    make_pruner,
    oriented_weight,
    prune_model,
    run_blocks,
    sparsegpt_prune,
    wanda_prune,
)
from layerif.pruning.calibration import _block_modules


def samples(tokenizer, n=3):
    # long enough to pass Gemma3's sliding window (16) so its two mask kinds differ
    return [torch.tensor(tokenizer(" ".join(TEXTS[i:] + TEXTS[:i]))["input_ids"][:40])
            for i in range(n)]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_block_by_block_inputs_match_a_full_forward(arch, tokenizer):
    """Every block (not only the first) gets the inputs a full forward of the dense model gives."""
    model = build_tiny_model(arch, len(tokenizer), layers=3)
    data = samples(tokenizer)
    modules = _block_modules(model)

    def record(store):
        return [mod.register_forward_pre_hook(lambda _m, a, i=i: store[i].append(a[0].clone()))
                for i, mod in enumerate(modules)]

    full = [[] for _ in modules]
    handles = record(full)
    with torch.no_grad():
        for ids in data:
            model(input_ids=ids.view(1, -1), use_cache=False)
    for h in handles:
        h.remove()
    captured = capture_block_inputs(model, data)
    sequential = [[] for _ in modules]
    handles = record(sequential)
    run_blocks(model, captured, on_block=lambda i, spec, mod, fwd: None)
    for h in handles:
        h.remove()
    for i in range(len(modules)):
        assert len(sequential[i]) == len(full[i]) == len(data)
        for a, b in zip(sequential[i], full[i], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(captured.hidden, full[0], strict=True):
        assert torch.equal(a, b)


def _problem(seed=0, d_out=24, d_in=160, tokens=400):
    """Correlated input features of uneven, randomly placed scales (as in LLM activations).
    (Scales that grow along the columns would penalise SparseGPT's per-128-column masks.)"""
    g = torch.Generator().manual_seed(seed)
    mix = torch.eye(d_in) + 0.3 * torch.randn(d_in, d_in, generator=g) / d_in**0.5
    scales = 0.1 + 3 * torch.rand(d_in, generator=g)
    X = (torch.randn(tokens, d_in, generator=g) @ mix) * scales
    W = torch.randn(d_out, d_in, generator=g)
    return W, X


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.7])
def test_each_pruner_hits_its_ratio(ratio):
    W, X = _problem()
    m = magnitude_prune(W, ratio)
    assert int((m == 0).sum()) == round(W.numel() * ratio)
    kept = W[m != 0].abs()
    assert ratio == 0 or kept.min() >= W[m == 0].abs().max()  # the smallest were removed
    w = wanda_prune(W, ratio, X.square().sum(0))
    assert ((w == 0).sum(1) == round(W.shape[1] * ratio)).all()  # exactly per output row
    s = sparsegpt_prune(W, ratio, 2 * X.T @ X / len(X))
    blocks = -(-W.shape[1] // 128)
    assert abs(float((s == 0).float().mean()) - ratio) <= blocks / W.numel() + 1e-9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparsegpt_reconstructs_best(seed):
    W, X = _problem(seed)
    errors = {}
    for name, Wp in (("magnitude", magnitude_prune(W, 0.5)),
                     ("wanda", wanda_prune(W, 0.5, X.square().sum(0))),
                     ("sparsegpt", sparsegpt_prune(W, 0.5, 2 * X.T @ X / len(X)))):
        errors[name] = float(((W - Wp) @ X.T).square().sum())
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"], errors


@pytest.mark.parametrize("pruner", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_prune_model_per_layer_ratios_and_reload(pruner, arch, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    model = build_tiny_model(arch, len(tokenizer), layers=2)
    report = prune_model(model, [0.25, 0.6], pruner, samples(tokenizer), progress=False)
    for block in discover_blocks(model):
        for m in block.matrices:
            W = oriented_weight(m)
            achieved = report.achieved[m.name]
            target = [0.25, 0.6][block.index]
            assert abs(achieved - target) <= (W.shape[0] + 1) / W.numel(), (m.name, achieved)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = samples(tokenizer, 1)[0].view(1, -1)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)
    for (n, p), (_, q) in zip(model.named_parameters(), reloaded.named_parameters(), strict=True):
        assert torch.equal(p == 0, q == 0), n


def test_pruning_errors(tokenizer):
    model = build_tiny_model("llama", len(tokenizer), layers=2)
    with pytest.raises(ValueError, match="2 blocks"):
        prune_model(model, [0.5], "magnitude", progress=False)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        prune_model(model, [0.5, 1.0], "magnitude", progress=False)
    with pytest.raises(LayerIFError, match="unknown pruner 'random'; use one of magnitude"):
        prune_model(model, [0.5, 0.5], "random", progress=False)
    with pytest.raises(LayerIFError, match="takes no option blocksize"):
        make_pruner("wanda", blocksize=64)
    with pytest.raises(ValueError, match="calibration samples"):
        prune_model(model, [0.5, 0.5], "wanda", progress=False)


def test_pruner_arguments_reach_the_pruner():
    from layerif.pruning import InputStatistics

    gen = torch.Generator().manual_seed(0)
    W, X = torch.randn(6, 32, generator=gen), torch.randn(50, 32, generator=gen)
    stats = InputStatistics(need_hessian=True, hessians={"w": X.T @ X}, tokens={"w": 50})
    tuned = make_pruner("sparsegpt", blocksize=8, damping=0.05).prune(W, 0.5, stats, "w")
    torch.testing.assert_close(tuned, sparsegpt_prune(W, 0.5, stats.hessian("w"), 8, 0.05),
                               rtol=0, atol=0)
    assert not torch.equal(tuned, make_pruner("sparsegpt").prune(W, 0.5, stats, "w"))
    with pytest.raises(LayerIFError, match="blocksize >= 1"):
        make_pruner("sparsegpt", blocksize=0)
