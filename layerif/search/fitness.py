"""The whole model's fitness on held text, and re-running only what a candidate changed.

Fitness of an allocation (lower is better), per held window of T tokens, averaged over its
T - 1 predicted tokens:
    kl   KL(p_dense || q_pruned) of the next-token distributions (EvoPress's default), nats;
    nll  the pruned model's mean token NLL, nats.
A candidate's fitness on some windows is the mean of theirs (windows are equally long).

`WholeModelFitness` keeps, for the current parent allocation, the input hidden state of every
block on every window (the cache). A candidate that first differs from the parent at block f
re-runs blocks f..L-1 from the cached input of block f (the blocks before f are pass-through
stubs; `pruning.calibration.tail_from`), which gives the same fitness as a full forward of the
candidate (tests hold it to 1e-6). Adopting a new parent re-runs it from its first changed block
on every window, recording the new block inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models import discover_blocks
from ..pruning.calibration import tail_from
from .database import LevelDatabase

KINDS = ("kl", "nll")


@dataclass
class HeldText:
    """Windows of held text: `sources` (the specs mixed), `counts` (windows from each),
    `windows` ((T,) token tensors, in source order)."""

    sources: list[str]
    counts: list[int]
    windows: list[torch.Tensor]

    @property
    def tokens(self) -> int:
        return sum(int(w.numel()) for w in self.windows)

    def to_dict(self) -> dict:
        return {"sources": self.sources, "windows": self.counts,
                "seqlen": int(self.windows[0].numel()) if self.windows else 0}


def split_sources(spec: str) -> list[str]:
    """`A+B+C` -> [A, B, C]: the sources a held text mixes."""
    return [s.strip() for s in spec.split("+") if s.strip()]


def held_text(tokenizer, spec: str, n: int, seqlen: int, flag: str = "--search-windows"
              ) -> HeldText:
    """`n` windows of `seqlen` tokens mixed evenly from the '+'-joined sources of `spec` (the
    first windows of each source's text, as `layerif sensitivity` reads its held text); a
    source too short is refused naming `flag`."""
    from ..data.calibration import perplexity_text
    from ..errors import DataError

    sources = split_sources(spec)
    counts = [n // len(sources) + (i < n % len(sources)) for i in range(len(sources))]
    windows = []
    for source, count in zip(sources, counts, strict=True):
        if not count:
            continue
        text, _ = perplexity_text(source)
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        if len(ids) < count * seqlen:
            raise DataError(f"{source}: {len(ids)} tokens hold {len(ids) // seqlen} windows "
                            f"of {seqlen}, fewer than the {count} {flag} {n} asks of it; give "
                            "more text, fewer or shorter windows.")
        flat = torch.tensor(ids[: count * seqlen])
        windows += [flat[i * seqlen:(i + 1) * seqlen].clone() for i in range(count)]
    return HeldText(sources, counts, windows)


@torch.no_grad()
def window_fitness(logits: torch.Tensor, ids: torch.Tensor, kind: str,
                   target: tuple[torch.Tensor, torch.Tensor] | None) -> float:
    """One window's fitness from its (1, T, V) logits; target: (p (T-1, V), sum_v p log p
    (T-1,)) of the dense model, for kl."""
    z = logits[0, :-1].float()
    if kind == "nll":
        return float(F.cross_entropy(z, ids.view(-1)[1:].to(z.device)))
    p, neg_entropy = target
    log_q = torch.log_softmax(z, dim=-1)
    return float((neg_entropy - torch.linalg.vecdot(p, log_q)).mean())


@torch.no_grad()
def dense_target(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(p, sum_v p log p) of the model's next-token distributions on one window."""
    device = next(model.parameters()).device
    z = model(input_ids=ids.view(1, -1).to(device), use_cache=False).logits[0, :-1].float()
    log_p = torch.log_softmax(z, dim=-1)
    p = log_p.exp()
    return p.cpu(), torch.linalg.vecdot(p, log_p).cpu()


@torch.no_grad()
def full_forward_fitness(model: nn.Module, windows: Sequence[torch.Tensor], kind: str,
                         targets: Sequence | None = None) -> list[float]:
    """Each window's fitness from a plain forward of the model as it is."""
    device = next(model.parameters()).device
    out = []
    for i, ids in enumerate(windows):
        ids = ids.view(1, -1).to(device)
        logits = model(input_ids=ids, use_cache=False).logits
        out.append(window_fitness(logits, ids, kind, targets[i] if kind == "kl" else None))
    return out


class WholeModelFitness:
    """Fitness of allocations (one ladder level per block) on the held windows, re-running only
    the blocks from a candidate's first difference with the cached parent (module docstring).
    `tokens` and `block_tokens` count what the candidates cost: tokens run, and tokens times
    the fraction of the blocks re-run."""

    def __init__(self, model: nn.Module, database: LevelDatabase, text: HeldText, kind: str):
        self.model = model
        self.database = database
        self.windows = [w.view(1, -1) for w in text.windows]
        self.kind = kind
        self.n_blocks = len(discover_blocks(model))
        self.current: list[int | None] = [None] * self.n_blocks  # the levels in the model
        self.targets = [dense_target(model, w) for w in self.windows] if kind == "kl" else None
        # block 0's input per window (the embeddings), the rest filled by `adopt`
        from ..pruning.calibration import capture_block_inputs

        first = capture_block_inputs(model, self.windows).hidden
        self.cache: list[list[torch.Tensor]] = [first] + [[] for _ in range(self.n_blocks - 1)]
        self.parent: tuple[int, ...] | None = None
        self.parent_fitness: list[float] = []
        self.tokens = 0
        self.block_tokens = 0.0

    def set_levels(self, levels: Sequence[int]) -> None:
        """Write into the model the levels that differ from those it holds."""
        for b, k in enumerate(levels):
            if self.current[b] != k:
                self.database.apply(b, k)
                self.current[b] = k

    def first_change(self, levels: Sequence[int]) -> int:
        """The first block where `levels` differ from the parent (n_blocks: none)."""
        if self.parent is None:
            return 0
        return next((b for b, (a, p) in enumerate(zip(levels, self.parent, strict=True))
                     if a != p), self.n_blocks)

    @torch.no_grad()
    def _tail(self, f: int, windows: Sequence[int], record=None) -> list[float]:
        device = next(self.model.parameters()).device
        out = []
        with tail_from(self.model, f, self.cache[f], record) as which:
            for w in windows:
                which[0] = w
                ids = self.windows[w].to(device)
                logits = self.model(input_ids=ids, use_cache=False).logits
                out.append(window_fitness(logits, ids, self.kind,
                                          self.targets[w] if self.targets else None))
        return out

    def evaluate(self, levels: Sequence[int], windows: Sequence[int]) -> float:
        """The mean fitness of `levels` on the pool windows `windows`; the parent's own is
        read from its stored per-window fitness."""
        f = self.first_change(levels)
        if f == self.n_blocks:
            return float(sum(self.parent_fitness[w] for w in windows) / len(windows))
        self.set_levels(levels)
        values = self._tail(f, windows)
        run = sum(int(self.windows[w].numel()) for w in windows)
        self.tokens += run
        self.block_tokens += run * (self.n_blocks - f) / self.n_blocks
        return float(sum(values) / len(values))

    def adopt(self, levels: Sequence[int], better: bool = False) -> list[float] | None:
        """Make `levels` the parent: re-run it from its first change on every window, keeping
        the new block inputs; returns its fitness per window. better: adopt it only when its
        mean fitness on all the windows is below the parent's (else None, nothing changed)."""
        levels = tuple(int(k) for k in levels)
        f = self.first_change(levels)
        if f == self.n_blocks and self.parent_fitness:
            return self.parent_fitness
        f = min(f, self.n_blocks - 1) if self.parent is not None else 0
        self.set_levels(levels)
        fresh: dict[int, list[torch.Tensor]] = {i: [] for i in range(f + 1, self.n_blocks)}

        def record(i: int, h: torch.Tensor) -> None:
            if i > f:
                fresh[i].append(h.detach().to("cpu", copy=True))

        values = self._tail(f, range(len(self.windows)), record)
        run = sum(int(w.numel()) for w in self.windows)
        self.tokens += run
        self.block_tokens += run * (self.n_blocks - f) / self.n_blocks
        if better and sum(values) / len(values) >= sum(self.parent_fitness) / len(
                self.parent_fitness):
            return None
        for i, hidden in fresh.items():
            self.cache[i] = hidden
        self.parent, self.parent_fitness = levels, values
        return values
