"""One sensitivity measurement end to end, as `layerif sensitivity` and the experiment runner do
it: inputs checked before any weight is read, the memory plan, the windows, a resumable
measurement, the additivity checks, and the folder written atomically."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..data.provenance import ContentSet, check_disjoint, content_set
from ..environment import machine_record
from ..errors import DataError
from .measure import check_levels, measure_sensitivity, measured_increase

HELD_ROLE = "held (sensitivity)"  # overlaps nothing: calibration, scoring and evaluation alike


def held_windows(tokenizer, source: str, n: int, seqlen: int) -> list[torch.Tensor]:
    """The first `n` non-overlapping windows of `seqlen` tokens of `source`'s text (joined with
    blank lines, as perplexity reads it); refused when the text is too short."""
    from ..data.calibration import perplexity_text

    text, _ = perplexity_text(source)
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    if n < 1 or seqlen < 2:
        raise DataError(f"need --held-windows >= 1 and --seqlen >= 2, got {n}, {seqlen}.")
    if len(ids) < n * seqlen:
        raise DataError(f"{source}: {len(ids)} tokens hold {len(ids) // seqlen} windows of "
                        f"{seqlen}, fewer than --held-windows {n}; give more text, fewer or "
                        "shorter windows.")
    flat = torch.tensor(ids[: n * seqlen])
    return [flat[i * seqlen:(i + 1) * seqlen].clone() for i in range(n)]


@dataclass
class SensitivityRun:
    """What a measurement is made of (all of it recorded, and the resume key)."""

    model: str
    pruner: str
    levels: list[float]
    calibration: str
    nsamples: int = 32
    seqlen: int = 512
    held: str = "sciq:validation[800:1000]"
    held_windows: int = 16
    seed: int = 0
    checks: list[str] = field(default_factory=list)  # alloc.json files to check additivity on
    device: str | None = None
    dtype: str = "float32"

    def check_inputs(self, recorded: list[ContentSet] = ()) -> list[ContentSet]:
        """Refuse, before any weight is read: bad levels or counts, held text sharing content
        with the calibration or with `recorded` sets (a grid's scoring and evaluation data, the
        checked allocations' scores), allocations that cannot be read. Returns the two sets."""
        from ..allocation.api import SparsityAllocation
        from ..evaluation.overlap import allocation_sets
        from ..pruning.pruners import make_pruner

        self.levels = check_levels(self.levels)
        if self.nsamples < 1 or self.held_windows < 1 or self.seqlen < 2:
            raise DataError("--nsamples and --held-windows must be >= 1, --seqlen >= 2.")
        held = content_set(self.held, HELD_ROLE)
        sets = [held]
        if make_pruner(self.pruner).needs_calibration:
            sets.append(content_set(self.calibration, "calibration"))
        others = list(recorded)
        for path in self.checks:
            others += allocation_sets(asdict(SparsityAllocation.load(path)), path)
        check_disjoint(sets, others)
        return sets

    def plan(self):
        from ..memory import DTYPE_BYTES, Shapes, plan_pruning
        from ..models import load_skeleton
        from ..pruning.pruners import make_pruner

        skeleton = load_skeleton(self.model)
        shapes = Shapes.of(skeleton)
        device = self._device()
        plan = plan_pruning(skeleton, make_pruner(self.pruner), device=device, dtype=self.dtype,
                            nsamples=self.nsamples, seqlen=self.seqlen)
        plan.what = f"sensitivity ({self.pruner})"
        size = DTYPE_BYTES[self.dtype]
        if device.startswith("cuda"):  # the trials run the whole model on the device
            plan.parts[f"weights ({self.dtype})"] = sum(
                p.numel() for p in skeleton.parameters()) * size
        plan.parts[f"held windows' hidden states ({self.held_windows} x {self.seqlen}, in "
                   "and out)"] = 2 * self.held_windows * self.seqlen * shapes.hidden * size
        plan.parts["one window's logits"] = self.seqlen * shapes.vocab * (size + 8)
        return plan

    def _device(self) -> str:
        return self.device or ("cuda" if torch.cuda.is_available() else "cpu")

    def key(self) -> dict:
        """What the resume folder must match (a changed setting starts afresh)."""
        return {k: v for k, v in asdict(self).items() if k not in ("checks", "device")}

    def run(self, out: str | Path, resume_dir: str | Path | None = None,
            progress: bool = True) -> dict:
        from ..allocation.api import SparsityAllocation
        from ..data.calibration import calibration_samples
        from ..fingerprint import check_same_model, model_fingerprint
        from ..influence.checkpoint import StepCache
        from ..io import check_output_folder, check_writable
        from ..models import discover_blocks, load_model
        from .files import FILE, PLOT, save

        check_writable(out)
        check_output_folder(out, owned_files={FILE, PLOT})
        sets = self.check_inputs()
        model, tokenizer = load_model(self.model, device=self._device(), dtype=self.dtype)
        fingerprint = model_fingerprint(model, self.model)
        allocations = []
        for path in self.checks:
            alloc = SparsityAllocation.load(path)
            check_same_model(alloc.model_fingerprint, fingerprint, path)
            n_blocks = len(discover_blocks(model))
            if len(alloc.ratios) != n_blocks:
                raise DataError(f"{path} has {len(alloc.ratios)} layer ratios but {self.model} "
                                f"has {n_blocks} blocks; allocate for this model.")
            allocations.append((Path(path).stem, alloc))
        held = held_windows(tokenizer, self.held, self.held_windows, self.seqlen)
        calibration = calibration_samples(tokenizer, self.calibration, self.nsamples,
                                          self.seqlen, self.seed)
        # "steps": what a stored step holds (its value and its seconds); an older folder restarts
        steps = StepCache(resume_dir, {**self.key(), "fingerprint": fingerprint,
                                       "steps": "value+seconds"})
        result = measure_sensitivity(model, self.pruner, self.levels, calibration, held,
                                     progress=progress, steps=steps, seed=self.seed)
        additivity = []
        for name, alloc in allocations:
            measured = measured_increase(model, alloc.ratios, self.pruner, calibration, held,
                                         result.dense_window_nll)
            additivity.append({"name": name, "method": alloc.method, "ratios": alloc.ratios,
                               "predicted": float(result.interpolate(alloc.ratios).sum()),
                               "measured": measured})
        result.extra["additivity"] = additivity
        meta = {"model": self.model, "model_fingerprint": fingerprint, "pruner": self.pruner,
                "held": {"source": self.held, "windows": self.held_windows,
                         "seqlen": self.seqlen},
                "calibration": {"source": self.calibration, "nsamples": self.nsamples,
                                "seqlen": self.seqlen, "seed": self.seed},
                "provenance": [s.to_dict() for s in sets], "seed": self.seed,
                "device": str(next(model.parameters()).device), "dtype": self.dtype,
                # the machine that finished it: blocks resumed from an interrupted run
                # (resumed_seconds) may have been measured on another
                "machine": machine_record()}
        save(out, result, meta)
        steps.clear()
        return json.loads((Path(out) / "sensitivity.json").read_text())

