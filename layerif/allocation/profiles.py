"""What the allocation methods read from a scores file, below both the method registries
(sparsity_methods/, expert_methods/) and the file schemas (api.py), so neither imports the
other."""

from __future__ import annotations

import numpy as np

from .experts import AllocationError


def layer_profile(scores: dict, use_abs: bool) -> np.ndarray:
    """The score vector an allocation reads (|S| for sparsity, S for experts), refused when it
    is the same for every layer: an allocation from it would silently be uniform."""
    values = np.asarray(scores["scores"], dtype=np.float64)
    seen = np.abs(values) if use_abs else values
    if len(seen) > 1 and np.ptp(seen) == 0:
        name = scores.get("aggregate")
        saved = scores.get("aggregates") or {}
        others = [a for a, v in saved.items() if a != name and len(v) > 1
                  and np.ptp(np.abs(v) if use_abs else v) > 0]
        hint = (f"use --aggregate {others[0]}" if others else "score more or other examples")
        raise AllocationError(
            f"{scores['_path']}: aggregate {name!r} is {seen[0]:g} for every layer"
            f"{' in magnitude' if use_abs else ''}, so the allocation would be uniform; "
            f"{hint} (saved: {', '.join(saved) or 'none'}).")
    return values
