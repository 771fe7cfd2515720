"""A slow, obviously-correct oracle for layer-wise influence.

Batch size 1, plain autograd on the weight tensors, every per-example gradient materialised in
float64, the formulas of SPEC section 1 written out literally. Shares nothing with the engine but
the tokenised examples (whose contract tests/test_encode.py checks by hand).
"""

from __future__ import annotations

import torch

from layerif.data.encode import IGNORE_INDEX


def example_loss(model, example) -> torch.Tensor:
    """Mean -log p(token) over the counted tokens of one unpadded example, written as a loop."""
    ids = torch.tensor([example.input_ids], device=model.device)
    logits = model(input_ids=ids).logits[0].float()
    terms = []
    for j in range(1, len(example.labels)):
        if example.labels[j] != IGNORE_INDEX:
            terms.append(-torch.log_softmax(logits[j - 1], dim=-1)[example.labels[j]])
    return torch.stack(terms).mean()


def per_example_gradients(model, matrices, examples, dtype=torch.float64, mean=False):
    """For each matrix, an (n, d_m) tensor of per-example gradients (weight layout), or with
    mean=True their (d_m,) mean. One batch-size-1 autograd call per example."""
    weights = [m.module.weight for m in matrices]
    flags = [w.requires_grad for w in weights]
    for w in weights:
        w.requires_grad_(True)
    rows = [torch.zeros((1 if mean else len(examples), w.numel()), dtype=dtype) for w in weights]
    try:
        for k, ex in enumerate(examples):
            grads = torch.autograd.grad(example_loss(model, ex), weights)
            for i, g in enumerate(grads):
                rows[i][0 if mean else k] += g.detach().flatten().cpu().to(dtype)
    finally:
        for w, f in zip(weights, flags, strict=True):
            w.requires_grad_(f)
    return [r[0] / len(examples) for r in rows] if mean else rows


def oracle_block_influence(
    model, blocks, train, val, estimator: str, damping: float = 0.1, dtype=torch.float64
):
    """(n_train, n_blocks) influences, DataInf sign, by brute force."""
    matrices = [m for b in blocks for m in b.matrices]
    V = per_example_gradients(model, matrices, val, dtype, mean=True)
    G_train = per_example_gradients(model, matrices, train, dtype)
    n = len(train)
    per_matrix = []
    for m, G, v in zip(matrices, G_train, V, strict=True):
        d = G.shape[1]
        lam = damping * (G * G).sum(1).mean() / d
        if estimator == "tracin":
            IF = -(G @ v)
        elif estimator == "datainf":
            norms = (G * G).sum(1)
            c = (G @ v) / (lam + norms)
            r = (v - (c[:, None] * G).sum(0) / n) / lam
            IF = -(G @ r)
        elif estimator == "exact":
            H = G.T @ G / n + lam * torch.eye(d, dtype=dtype)
            IF = -(G @ torch.linalg.solve(H, v))
        else:
            raise ValueError(estimator)
        per_matrix.append((m.layer, IF))
    layers = [b.index for b in blocks if b.matrices]
    out = torch.zeros(n, len(layers), dtype=torch.float64)
    G_train.clear()
    for layer, IF in per_matrix:
        out[:, layers.index(layer)] += IF
    return out.numpy()
