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
    """A frozen base linear plus E LoRA experts and a router, on the base layer's device.

    The adapters and the router are kept in `dtype` (fp32 by default, whatever the base's
    dtype): inputs are cast up for them and their update cast back to the base output's dtype.
    Initial values are drawn on the CPU from `generator` (seeded by the caller), so a seed gives
    the same adapters on any device and in any process."""

    def __init__(self, base: nn.Module, n_experts: int, rank: int = 8, alpha: float = 16,
                 dropout: float = 0.05, top_k: int | None = None,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32):
        super().__init__()
        if n_experts < 1 or rank < 1:
            raise ValueError("need n_experts >= 1 and rank >= 1")
        self.base = base
        self.transposed = not isinstance(base, nn.Linear)  # GPT-2 Conv1D: weight (d_in, d_out)
        d_in, d_out = (base.weight.shape[::-1] if not self.transposed else base.weight.shape)
        self.n_experts, self.rank, self.scaling = n_experts, rank, alpha / rank
        self.top_k = min(2 if top_k is None else top_k, n_experts)
        device = base.weight.device

        def draw(shape, scale: float, uniform: bool = False) -> nn.Parameter:
            t = torch.empty(shape, dtype=torch.float32)
            t = t.uniform_(-scale, scale, generator=generator) if uniform else \
                t.normal_(0.0, scale, generator=generator)
            return nn.Parameter(t.to(device=device, dtype=dtype))

        self.lora_A = draw((n_experts, rank, d_in), 1.0 / rank)
        self.lora_B = nn.Parameter(torch.zeros(n_experts, d_out, rank, device=device, dtype=dtype))
        self.router = None
        if n_experts > 1:  # nn.Linear's default init, U(-1/sqrt(d_in), 1/sqrt(d_in)), seeded
            self.router = nn.Linear(d_in, n_experts, bias=False, device="meta")
            self.router.weight = draw((n_experts, d_in), d_in ** -0.5, uniform=True)
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
        xa = x.to(self.lora_A.dtype)
        gates = self.routing(xa)  # (..., E)
        E, r, d_in = self.lora_A.shape
        # Two GEMMs over the stacked experts: x -> (..., E*r) -> gate -> (..., d_out). (A
        # three-operand einsum here materialised a (tokens, E, d_out, r) tensor: ~10x slower.)
        z = (self.dropout(xa) @ self.lora_A.reshape(E * r, d_in).T).unflatten(-1, (E, r))
        zg = (z * gates.unsqueeze(-1)).flatten(-2)
        update = zg @ self.lora_B.permute(0, 2, 1).reshape(E * r, -1)
        return y + (self.scaling * update).to(y.dtype)


@dataclass
class MoEConfig:
    experts: list[int]  # per layer
    rank: int = 8
    alpha: float = 16
    dropout: float = 0.05
    top_k: int = 2
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    base_model: str = ""
    adapter_dtype: str = "float32"  # adapters and routers train in this dtype
    base_fingerprint: dict = field(default_factory=dict)  # the weights they were trained on

    def __post_init__(self) -> None:
        """Refuse, naming the option, what the layers would otherwise crash on or silently cap
        (a top-k above every layer's expert count would be stored and mean nothing)."""
        import math

        if not self.experts or any(not isinstance(e, int) or e < 1 for e in self.experts):
            raise LayerIFError("every layer needs at least one expert (the allocation's "
                               "experts).")
        if not isinstance(self.rank, int) or self.rank < 1:
            raise LayerIFError(f"--rank must be >= 1, got {self.rank}.")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise LayerIFError(f"--alpha must be a number > 0, got {self.alpha}.")
        if not 0 <= self.dropout < 1:
            raise LayerIFError(f"--dropout must be in [0, 1), got {self.dropout}.")
        if not isinstance(self.top_k, int) or not 1 <= self.top_k <= max(self.experts):
            raise LayerIFError(f"--top-k must be in [1, {max(self.experts)}] (the most experts "
                               f"any layer has), got {self.top_k}.")


def apply_lora_moe(model: nn.Module, config: MoEConfig, seed: int = 0) -> list[str]:
    """Replace every targeted matrix of layer l by a LoRAMoELinear with config.experts[l]
    experts, initialised from one generator seeded with `seed` (modules in model order); freeze
    everything else. Returns the adapted module names."""
    from ..models import DTYPES

    generator = torch.Generator().manual_seed(seed)
    dtype = DTYPES[config.adapter_dtype]
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
                                                config.top_k, generator, dtype))
            adapted.append(m.name)
    if not adapted:
        raise LayerIFError(f"no matrix matched targets {config.targets}.")
    return adapted


def adapter_footprint(model: nn.Module, config: MoEConfig) -> tuple[int, int]:
    """(trainable parameters, bytes of activations kept for the backward per token) of the
    LoRA-MoE `config` on `model` (a `meta` skeleton will do), for the memory plan: per adapted
    (d_in, d_out) matrix with E experts of rank r, the parameters E r (d_in + d_out) plus the
    router's d_in E; per token the input's copy in the adapters' dtype and its dropout output
    and mask (d_in each), the expert activations before and after gating (2 E r), the router's
    logits, probabilities and gates (3 E), and the update (d_out)."""
    from ..memory import DTYPE_BYTES

    size = DTYPE_BYTES[config.adapter_dtype]
    params = per_token = 0
    for block in discover_blocks(model):
        E = config.experts[block.index]
        for m in block.matrices:
            if config.targets and m.name.rsplit(".", 1)[-1] not in config.targets:
                continue
            params += E * config.rank * (m.d_in + m.d_out) + (m.d_in * E if E > 1 else 0)
            per_token += size * (3 * m.d_in + 2 * E * config.rank + 3 * E + m.d_out)
    return params, per_token


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

    from ..fingerprint import check_same_model, model_fingerprint

    adapter_dir = Path(adapter_dir)
    config = MoEConfig(**json.loads((adapter_dir / ADAPTER_CONFIG).read_text()))
    if config.base_fingerprint:
        check_same_model(config.base_fingerprint, model_fingerprint(model, "the base model"),
                         str(adapter_dir))
    apply_lora_moe(model, config)
    state = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    missing = set(adapter_state(model)) - set(state)
    if missing:
        raise LayerIFError(f"{adapter_dir}: adapter weights missing for {sorted(missing)[:3]}")
    model.load_state_dict(state, strict=False)
    return config


__all__: Sequence[str] = ["LoRAMoELinear", "MoEConfig", "apply_lora_moe", "aux_loss",
                          "load_adapters", "save_adapters"]
