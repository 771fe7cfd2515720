"""A peft `LoraConfig` from a rank allocation (ranks.json).

Every adapted module gets its layer's rank through `rank_pattern` and alpha = alpha_per_rank x
rank through `alpha_pattern` (so the update's scale alpha / r is the same in every layer, as with
the usual alpha = 2r), both keyed by full module names ("model.layers.3.self_attn.q_proj"); peft
matches a key against the end of a module's name on dot boundaries, and a full name matches that
module alone. `target_modules` lists the same full names. The dict is what
`peft.LoraConfig(**config)` takes unchanged."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..allocation.api import RankAllocation

LORA_CONFIG_SUFFIX = ".lora_config.json"


def lora_config(alloc: RankAllocation, alpha_per_rank: float = 2.0,
                dropout: float = 0.05) -> dict:
    """LoraConfig keyword arguments for `alloc` (see the module docstring)."""
    def alpha(rank: int) -> float | int:
        value = alpha_per_rank * rank
        return int(value) if float(value).is_integer() else value

    ranks = {name: rank for names, rank in zip(alloc.modules, alloc.ranks, strict=True)
             for name in names}
    default = Counter(alloc.ranks).most_common(1)[0][0]  # every module has a pattern entry anyway
    return {
        "task_type": "CAUSAL_LM",
        "r": default,
        "lora_alpha": alpha(default),
        "lora_dropout": dropout,
        "bias": "none",
        "fan_in_fan_out": bool(alloc.parameters.get("fan_in_fan_out", False)),
        "target_modules": list(ranks),
        "rank_pattern": ranks,
        "alpha_pattern": {name: alpha(rank) for name, rank in ranks.items()},
    }


def lora_config_path(ranks_path: str | Path) -> Path:
    """Where `allocate ranks --out X.json` writes the LoraConfig: X.lora_config.json beside it."""
    ranks_path = Path(ranks_path)
    return ranks_path.with_name(ranks_path.stem + LORA_CONFIG_SUFFIX)
