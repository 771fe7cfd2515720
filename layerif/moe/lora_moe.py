"""A MoLA-style mixture of LoRA experts (SPEC section 2).

For each adapted linear W0 of layer l: E_l experts (A_e: r x d_in, Gaussian init std 1/r;
B_e: d_out x r, zeros) and a router W_r (d_in -> E_l, no bias). p = softmax(W_r x); keep the
top-k (k = 2 where E_l > 1, else 1), renormalise;
    y = W0 x + sum_{e in top-k} p_e (alpha/r) B_e A_e x.
A Switch-style load-balancing loss E * sum_e f_e P_e is kept per layer (`aux_loss`). Only the
adapters and routers train; the base model is frozen.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import LayerIFError
from ..models import discover_blocks

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


class LoRAMoELinear(nn.Module):
    def __init__(self, base: nn.Module, n_experts: int, rank: int = 8, alpha: float = 16,
                 dropout: float = 0.05, top_k: int | None = None):
        super().__init__()
        if n_experts < 1 or rank < 1:
            raise ValueError("need n_experts >= 1 and rank >= 1")
        self.base = base
        self.transposed = not isinstance(base, nn.Linear)  # GPT-2 Conv1D: weight (d_in, d_out)
        d_in, d_out = (base.weight.shape[::-1] if not self.transposed else base.weight.shape)
        self.n_experts, self.rank, self.scaling = n_experts, rank, alpha / rank
        self.top_k = min(2 if top_k is None else top_k, n_experts)
        self.lora_A = nn.Parameter(torch.randn(n_experts, rank, d_in) / rank)
        self.lora_B = nn.Parameter(torch.zeros(n_experts, d_out, rank))
        self.router = nn.Linear(d_in, n_experts, bias=False) if n_experts > 1 else None
        self.dropout = nn.Dropout(dropout)
        self.aux_loss = torch.zeros(())

    def routing(self, x: torch.Tensor) -> torch.Tensor:
        """(..., E) expert weights: the top-k of softmax(W_r x), renormalised, zeros elsewhere."""
        if self.router is None:
            return torch.ones(*x.shape[:-1], 1, dtype=x.dtype, device=x.device)
        probs = torch.softmax(self.router(x).float(), dim=-1)
        top, idx = probs.topk(self.top_k, dim=-1)
        gates = torch.zeros_like(probs).scatter(-1, idx, top / top.sum(-1, keepdim=True))
        if self.training:  # Switch-style balance: E * sum_e (share routed to e) * (mean prob)
            routed = (gates > 0).float().flatten(0, -2).mean(0) / self.top_k
            self.aux_loss = self.n_experts * (routed * probs.flatten(0, -2).mean(0)).sum()
        return gates.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        gates = self.routing(x)  # (..., E)
        E, r, d_in = self.lora_A.shape
        # Two GEMMs over the stacked experts: x -> (..., E*r) -> gate -> (..., d_out). (A
        # three-operand einsum here materialised a (tokens, E, d_out, r) tensor: ~10x slower.)
        z = (self.dropout(x) @ self.lora_A.reshape(E * r, d_in).T).unflatten(-1, (E, r))
        zg = (z * gates.unsqueeze(-1)).flatten(-2)
        update = zg @ self.lora_B.permute(0, 2, 1).reshape(E * r, -1)
        return y + self.scaling * update


@dataclass
class MoEConfig:
    experts: list[int]  # per layer
    rank: int = 8
    alpha: float = 16
    dropout: float = 0.05
    top_k: int = 2
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    base_model: str = ""


def apply_lora_moe(model: nn.Module, config: MoEConfig) -> list[str]:
    """Replace every targeted matrix of layer l by a LoRAMoELinear with config.experts[l]
    experts; freeze everything else. Returns the adapted module names."""
    blocks = discover_blocks(model)
    if len(config.experts) != len(blocks):
        raise LayerIFError(
            f"the expert allocation has {len(config.experts)} layers, the model {len(blocks)}."
        )
    for p in model.parameters():
        p.requires_grad_(False)
    adapted = []
    for block in blocks:
        for m in block.matrices:
            short = m.name.rsplit(".", 1)[-1]
            if config.targets and short not in config.targets:
                continue
            parent_name, attr = m.name.rsplit(".", 1)
            parent = model.get_submodule(parent_name)
            setattr(parent, attr, LoRAMoELinear(m.module, config.experts[block.index],
                                                config.rank, config.alpha, config.dropout,
                                                config.top_k))
            adapted.append(m.name)
    if not adapted:
        raise LayerIFError(f"no matrix matched targets {config.targets}.")
    return adapted


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()
            if p.requires_grad}


def aux_loss(model: nn.Module) -> torch.Tensor:
    losses = [m.aux_loss for m in model.modules() if isinstance(m, LoRAMoELinear)
              and m.router is not None]
    return torch.stack(losses).mean() if losses else torch.zeros(())


def save_adapters(model: nn.Module, config: MoEConfig, out_dir: str | Path) -> Path:
    from safetensors.torch import save_file

    from ..io import atomic_dir

    with atomic_dir(out_dir, marker=ADAPTER_CONFIG) as tmp:
        save_file(adapter_state(model), str(tmp / ADAPTER_WEIGHTS))
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(asdict(config), indent=2))
    return Path(out_dir)


def load_adapters(model: nn.Module, adapter_dir: str | Path) -> MoEConfig:
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    config = MoEConfig(**json.loads((adapter_dir / ADAPTER_CONFIG).read_text()))
    apply_lora_moe(model, config)
    state = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    missing = set(adapter_state(model)) - set(state)
    if missing:
        raise LayerIFError(f"{adapter_dir}: adapter weights missing for {sorted(missing)[:3]}")
    model.load_state_dict(state, strict=False)
    return config


__all__: Sequence[str] = ["LoRAMoELinear", "MoEConfig", "apply_lora_moe", "aux_loss",
                          "load_adapters", "save_adapters"]
