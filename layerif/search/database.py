"""The level database: every block pruned at every level of the ladder, made once, read often.

Each block's pruner statistics come from the dense model's inputs to that block on the
calibration windows (one dense pass caches them, as `layerif sensitivity` does), so level k of
block l is exactly the sensitivity trial of block l at ratio k * step / P_l. A level is kept as
the mask of its nonzero weights (bits) and, for pruners that change the weights they keep
(SparseGPT), the kept values; a mask-only pruner's kept values are the dense weights. Blocks are
written one file each as they are made (a killed build resumes at the next block), in a folder
named by a digest of everything that decides its content, so searches that need the same
database share it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..models import discover_blocks
from ..pruning.calibration import capture_block_inputs, forward_block
from ..pruning.prune import InputStatistics, oriented_weight, prune_matrix
from ..pruning.pruners import Pruner
from .ladder import Ladder

FORMAT = 1  # raised when a block file's layout changes (part of the key)


def database_key(fingerprint: dict, pruner: Pruner, calibration: Sequence[torch.Tensor],
                 ladder: Ladder, dtype: torch.dtype) -> str:
    """A digest of what decides every stored level: the model's weights (fingerprint), the
    pruner and its arguments, the calibration windows' tokens, the ladder and the dtype."""
    h = hashlib.sha256()
    h.update(json.dumps({"fingerprint": fingerprint, "pruner": pruner.name,
                         "arguments": repr(pruner.args), "ladder": ladder.to_dict(),
                         "dtype": str(dtype), "format": FORMAT}, sort_keys=True).encode())
    for window in calibration:
        h.update(window.reshape(-1).to(torch.int64).numpy().tobytes())
        h.update(b"|")
    return h.hexdigest()[:20]


def stored_bytes(ladder: Ladder, keeps_values: bool, value_bytes: int = 4) -> int:
    """Bytes on disk of a whole database: a bit per weight and level, plus the kept values of
    a pruner that rewrites them."""
    total = 0
    for b, P in enumerate(ladder.params):
        for k in ladder.levels_of(b):
            total += P // 8 + 1
            if keeps_values:
                total += int(P * (1 - ladder.ratio(b, k))) * value_bytes
    return total


@dataclass
class StoredLevel:
    """One matrix at one level: `keep` the packed bits of its nonzero entries ((d_out, d_in)
    orientation, row-major), `values` the kept values in that order (None: the dense ones)."""

    keep: torch.Tensor
    values: torch.Tensor | None


class LevelDatabase:
    """The levels of every block (see the module docstring). `apply(b, k)` writes level k of
    block b into the model; `restore()` writes the dense weights back."""

    def __init__(self, model: nn.Module, ladder: Ladder, folder: Path):
        self.model = model
        self.ladder = ladder
        self.folder = Path(folder)
        self.blocks = discover_blocks(model)
        self.dense = [[oriented_weight(m).detach().clone() for m in b.matrices]
                      for b in self.blocks]
        self._loaded: dict[int, dict[str, torch.Tensor]] = {}

    # -- building -----------------------------------------------------------------------
    @torch.no_grad()
    def build(self, pruner: Pruner, calibration: Sequence[torch.Tensor], key: dict,
              progress: bool = True) -> float:
        """Make the block files that are missing (a folder of another key is refused by the
        caller); returns the seconds spent now."""
        from ..io import write_json

        start = time.perf_counter()
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = self.folder / "database.json"
        if not stamp.exists():
            write_json(stamp, key)
        missing = [b for b in range(len(self.blocks)) if not self._path(b).exists()]
        if not missing:
            return 0.0
        device = next(self.model.parameters()).device
        captured = capture_block_inputs(self.model, calibration) \
            if pruner.needs_calibration else None
        hidden = captured.hidden if captured else []
        bar = tqdm(total=len(missing), desc=f"level database ({pruner.name})", unit="block",
                   disable=not progress)
        for b, (spec, module) in enumerate(zip(self.blocks, self._modules(), strict=True)):
            if not missing or b > missing[-1]:
                break

            def forward_all(b=b, module=module, inputs=hidden):
                return forward_block(module, captured, b, inputs, device)

            stats, outputs = None, None
            if b in missing:
                if captured is not None:
                    stats, outputs = InputStatistics.collect_with_outputs(
                        spec.matrices, forward_all, pruner.statistics == "hessian")
                self._write_block(b, spec, pruner, stats)
                bar.update()
            if captured is not None:
                hidden = outputs if outputs is not None else forward_all()
        bar.close()
        return time.perf_counter() - start

    def _write_block(self, b: int, spec, pruner: Pruner, stats) -> None:
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {}
        for k in self.ladder.levels_of(b):
            ratio = self.ladder.ratio(b, k)
            for j, (m, W) in enumerate(zip(spec.matrices, self.dense[b], strict=True)):
                pruned = prune_matrix(W, ratio, pruner, stats, m.name)
                keep = pruned != 0
                tensors[f"{k}.{j}.keep"] = torch.from_numpy(
                    np.packbits(keep.reshape(-1).numpy()))
                if not torch.equal(pruned[keep], W[keep]):  # the pruner rewrote kept weights
                    tensors[f"{k}.{j}.values"] = pruned[keep].contiguous()
        path = self._path(b)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(tensors, str(tmp))
        tmp.replace(path)

    # -- reading ------------------------------------------------------------------------
    def _path(self, b: int) -> Path:
        return self.folder / f"block-{b:04d}.safetensors"

    def _modules(self) -> list[nn.Module]:
        return [self.model.get_submodule(b.path) for b in self.blocks]

    def preload(self) -> None:
        """Read every block file into memory (when the plan says it fits); otherwise each
        level is read from its memory-mapped file when applied (the page cache keeps what is
        used often)."""
        from safetensors.torch import load_file

        for b in range(len(self.blocks)):
            self._loaded[b] = load_file(str(self._path(b)))

    def _tensors(self, b: int, k: int) -> dict[str, torch.Tensor]:
        """The stored tensors of block b's level k."""
        if b in self._loaded:
            return {name: t for name, t in self._loaded[b].items()
                    if name.startswith(f"{k}.")}
        from safetensors import safe_open

        with safe_open(str(self._path(b)), framework="pt") as f:
            names = [n for n in f.keys() if n.startswith(f"{k}.")]  # noqa: SIM118
            return {name: f.get_tensor(name) for name in names}

    def level(self, b: int, k: int) -> list[torch.Tensor]:
        """Block b's matrices at level k, (d_out, d_in) each, in the model's dtype."""
        stored = self._tensors(b, k)
        out = []
        for j, W in enumerate(self.dense[b]):
            keep = torch.from_numpy(np.unpackbits(stored[f"{k}.{j}.keep"].numpy(),
                                                  count=W.numel()).astype(bool)).view(W.shape)
            values = stored.get(f"{k}.{j}.values")
            if values is None:
                out.append(W.masked_fill(~keep, 0))
            else:
                level = torch.zeros_like(W)
                level[keep] = values.to(W.dtype)
                out.append(level)
        return out

    @torch.no_grad()
    def apply(self, b: int, k: int | None) -> None:
        """Write level k of block b into the model (None: the dense block)."""
        weights = self.dense[b] if k is None else self.level(b, k)
        for m, W in zip(self.blocks[b].matrices, weights, strict=True):
            oriented_weight(m).copy_(W)

    def restore(self) -> None:
        for b in range(len(self.blocks)):
            self.apply(b, None)
