"""Pruning a whole model block by block with per-layer ratios."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..models import Matrix, discover_blocks
from .calibration import capture_block_inputs, run_blocks
from .pruners import Pruner, Structure, make_pruner, parse_structure


def oriented_weight(matrix: Matrix) -> torch.Tensor:
    """The matrix's weight as a (d_out, d_in) view (GPT-2's Conv1D stores (d_in, d_out))."""
    W = matrix.module.weight.data
    return W if isinstance(matrix.module, nn.Linear) else W.T


@dataclass
class InputStatistics:
    """Per matrix: sum over calibration tokens of x_j^2 (Wanda) and of x x^T (SparseGPT)."""

    need_hessian: bool
    sq_norms: dict[str, torch.Tensor] = field(default_factory=dict)
    hessians: dict[str, torch.Tensor] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)

    def hooks(self, matrices: Sequence[Matrix]) -> list:
        def make(m: Matrix):
            def hook(_module, args, _output):
                x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
                self.sq_norms[m.name] = self.sq_norms.get(m.name, 0) + x.square().sum(0)
                self.tokens[m.name] = self.tokens.get(m.name, 0) + x.shape[0]
                if self.need_hessian:
                    self.hessians[m.name] = self.hessians.get(m.name, 0) + x.T @ x

            return hook

        return [m.module.register_forward_hook(make(m)) for m in matrices]

    @classmethod
    def collect(cls, matrices: Sequence[Matrix], forward_all, need_hessian: bool = False):
        """Statistics of `matrices`' inputs over one `forward_all()` pass of their block."""
        return cls.collect_with_outputs(matrices, forward_all, need_hessian)[0]

    @classmethod
    def collect_with_outputs(cls, matrices: Sequence[Matrix], forward_all,
                             need_hessian: bool = False):
        """(the statistics, the block's outputs of that pass): a caller that does not change the
        weights hands the outputs back to `run_blocks` instead of a second pass."""
        stats = cls(need_hessian=need_hessian)
        handles = stats.hooks(matrices)
        try:
            outputs = forward_all()
        finally:
            for h in handles:
                h.remove()
        return stats, outputs

    def hessian(self, name: str) -> torch.Tensor:
        return 2 * self.hessians[name] / self.tokens[name]


@dataclass
class PruningReport:
    pruner: str
    ratios: list[float]
    achieved: dict[str, float]  # matrix name -> fraction of zeros
    seconds: dict[str, float]
    patterns: list[str] = field(default_factory=list)  # per layer, when not all unstructured


def layer_structure(pattern: str) -> Structure | str:
    """A layer's pattern ("unstructured", "dense" or "N:M") as what prune_matrix takes."""
    return "dense" if pattern == "dense" else parse_structure(pattern)


def prune_matrix(W: torch.Tensor, ratio: float, pruner: str | Pruner,
                 stats: InputStatistics | None, name: str, structure: Structure = None
                 ) -> torch.Tensor:
    """W pruned by `pruner` (a name in PRUNERS or a Pruner); see Pruner.prune."""
    return make_pruner(pruner).prune(W, ratio, stats, name, structure)


PRUNING_FILE = "pruning.json"


def save_pruned(model: nn.Module, tokenizer, out_dir, info: dict) -> Path:
    """A Hugging Face model folder (from_pretrained loads it) plus pruning.json, atomically."""
    from ..io import atomic_dir, write_json

    with atomic_dir(out_dir, marker=PRUNING_FILE) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / PRUNING_FILE, info)
    return Path(out_dir)


@torch.no_grad()
def prune_model(
    model: nn.Module,
    ratios: Sequence[float],
    pruner: str | Pruner,
    samples: Sequence[torch.Tensor] = (),
    device: str | None = None,
    progress: bool = True,
    patterns: Sequence[str] = (),
    steps=None,
) -> PruningReport:
    """Prune every block's matrices to that block's ratio, in place. samples: calibration token
    tensors (needed by wanda and sparsegpt). patterns: per block "unstructured" (the ratio),
    "dense" (left alone) or "N:M" (N zeros in every M consecutive inputs of a row); empty for
    unstructured everywhere. pruner: a name in PRUNERS (default arguments) or a Pruner.
    steps(name, compute): a resumable step cache (influence/checkpoint.StepCache): each
    block's pruned weights are one step, so a killed prune resumes at its next block (the
    calibration activations of the blocks before it recomputed through their kept weights,
    bit for bit)."""
    pruner = make_pruner(pruner)
    blocks = discover_blocks(model)
    if len(ratios) != len(blocks) or (patterns and len(patterns) != len(blocks)):
        raise ValueError(f"{len(ratios)} ratios / {len(patterns)} patterns for a model with "
                         f"{len(blocks)} blocks")
    structures = [layer_structure(p) for p in patterns] or [None] * len(blocks)

    def prune_block(i: int, matrices, stats: InputStatistics | None) -> None:
        if structures[i] == "dense":
            return
        for m in matrices:
            W = oriented_weight(m)
            W.copy_(prune_matrix(W, ratios[i], pruner, stats, m.name, structures[i]))

    def kept(i: int, matrices, prune_now) -> None:
        """Block i pruned by prune_now(), or its weights as a killed run kept them."""
        if steps is None:
            prune_now()
            return

        def compute() -> dict:
            prune_now()
            return {m.name: oriented_weight(m).detach().clone() for m in matrices}

        stored = steps(f"block-{i}", compute)
        for m in matrices:
            oriented_weight(m).copy_(stored[m.name])

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    if not pruner.needs_calibration:
        for i, block in enumerate(tqdm(blocks, desc=pruner.name, disable=not progress,
                                       leave=False)):
            kept(i, block.matrices, lambda i=i, block=block: prune_block(i, block.matrices, None))
        seconds["prune"] = time.perf_counter() - start
    else:
        if not samples:
            raise ValueError(f"{pruner.name} needs calibration samples")
        captured = capture_block_inputs(model, samples)
        seconds["capture"] = time.perf_counter() - start
        bar = tqdm(total=len(blocks), desc=pruner.name, disable=not progress, leave=False)

        def on_block(i, spec, _module, forward_all):
            if structures[i] != "dense":
                def prune_now():
                    stats = InputStatistics.collect(spec.matrices, forward_all,
                                                    pruner.statistics == "hessian")
                    prune_block(i, spec.matrices, stats)

                kept(i, spec.matrices, prune_now)
            bar.update()

        run_blocks(model, captured, on_block, device=device)
        bar.close()
        seconds["calibrate_and_prune"] = time.perf_counter() - start - seconds["capture"]
    achieved = {
        m.name: float((m.module.weight == 0).float().mean()) for b in blocks for m in b.matrices
    }
    return PruningReport(pruner.name, [float(r) for r in ratios], achieved, seconds,
                         list(patterns))
