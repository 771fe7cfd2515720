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


def per_example_gradients(model, matrices, examples) -> list[torch.Tensor]:
    """For each matrix, an (n, d_m) float64 tensor of per-example gradients (weight layout)."""
    weights = [m.module.weight for m in matrices]
    flags = [w.requires_grad for w in weights]
    for w in weights:
        w.requires_grad_(True)
    rows: list[list[torch.Tensor]] = [[] for _ in matrices]
    try:
        for ex in examples:
            grads = torch.autograd.grad(example_loss(model, ex), weights)
            for i, g in enumerate(grads):
                rows[i].append(g.detach().double().flatten().cpu())
    finally:
        for w, f in zip(weights, flags, strict=True):
            w.requires_grad_(f)
    return [torch.stack(r) for r in rows]


def oracle_block_influence(model, blocks, train, val, estimator: str, damping: float = 0.1):
    """(n_train, n_blocks) float64 influences, DataInf sign, by brute force."""
    matrices = [m for b in blocks for m in b.matrices]
    G_train = per_example_gradients(model, matrices, train)
    G_val = per_example_gradients(model, matrices, val)
    n = len(train)
    per_matrix = []
    for m, G, Gv in zip(matrices, G_train, G_val, strict=True):
        v = Gv.mean(0)
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
            H = G.T @ G / n + lam * torch.eye(d, dtype=torch.float64)
            IF = -(G @ torch.linalg.solve(H, v))
        else:
            raise ValueError(estimator)
        per_matrix.append((m.layer, IF))
    layers = [b.index for b in blocks if b.matrices]
    out = torch.zeros(n, len(layers), dtype=torch.float64)
    for layer, IF in per_matrix:
        out[:, layers.index(layer)] += IF
    return out.numpy()
