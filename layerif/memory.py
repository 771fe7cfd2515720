"""Memory plans: the estimated peak memory of a heavy run on its device, printed before the first
pass, checked against the memory free on that device, and refused at once (with the options that
would make it fit) when it cannot fit.

Every figure is in bytes and counts what the run itself allocates on the device, plus a fixed
`runtime` allowance (the Python process with torch and transformers imported on the CPU; the CUDA
context on a GPU). The parts are upper estimates from the shapes alone (model config, batch size,
tokens per example, number of examples), never from a pass; tests/test_memory.py checks them
against measured peaks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import LayerIFError

GIB = 2**30
RUNTIME_CPU = int(0.6 * GIB)  # python + torch + transformers + datasets imported, measured ~0.5
RUNTIME_CUDA = int(0.5 * GIB)  # the CUDA context and cuBLAS workspaces, outside torch's counts
HEADROOM = 0.9
CACHE_PART = "cached gradients (compact form)"  # plan at most this share of the free memory
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}


class InsufficientMemoryError(LayerIFError):
    """A run whose plan does not fit the memory free on its device; `plan` is that plan."""

    def __init__(self, message: str, plan: MemoryPlan | None = None):
        super().__init__(message)
        self.plan = plan


@dataclass
class MemoryPlan:
    """parts: name -> bytes, in the order they are printed; available: the free memory of
    `device` in bytes (None when unknown)."""

    what: str
    device: str
    parts: dict[str, int] = field(default_factory=dict)
    available: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.available is None or self.total <= HEADROOM * self.available

    def format(self) -> str:
        width = max(len(k) for k in self.parts) if self.parts else 10
        lines = [f"memory plan of {self.what} on {self.device}:"]
        lines += [f"  {name:{width}s} {gib(size):>10s}" for name, size in self.parts.items()]
        free = "unknown" if self.available is None else gib(self.available)
        lines.append(f"  {'peak (estimated)':{width}s} {gib(self.total):>10s}   of {free} free")
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)

    def refuse(self, alternatives: Sequence[tuple[str, MemoryPlan]] = ()) -> None:
        """Raise with the estimate and the alternatives that would fit, unless this plan fits."""
        if self.fits:
            return
        fitting = [f"{option} ({gib(plan.total)})" for option, plan in alternatives
                   if plan.fits]
        hint = ("; these would fit: " + ", ".join(fitting)) if fitting else (
            "; no single option here makes it fit: combine them, or use a device with more "
            "memory")
        raise InsufficientMemoryError(
            f"{self.what} needs about {gib(self.total)} on {self.device} (largest part: "
            f"{max(self.parts, key=self.parts.get)} {gib(max(self.parts.values()))}) but "
            f"{gib(self.available)} is free{hint}.", self)


def gib(size: float | None) -> str:
    return "?" if size is None else f"{size / GIB:.2f} GiB"


MEMORY_ENV = "LAYERIF_MEMORY_GB"  # plan against this many GiB instead of the free memory


def available_bytes(device: str | torch.device) -> int | None:
    """Free memory of `device`: $LAYERIF_MEMORY_GB when set (a share of a busy machine, or a
    smaller device simulated); else the CUDA driver's count on a GPU; on the CPU the kernel's
    MemAvailable, capped by the container's limit (cgroup v2 or v1) when there is one, divided
    among the data-parallel processes on this node."""
    import os

    if os.environ.get(MEMORY_ENV):
        try:
            return int(float(os.environ[MEMORY_ENV]) * GIB)
        except ValueError:
            raise LayerIFError(f"${MEMORY_ENV} must be a number of GiB, got "
                               f"{os.environ[MEMORY_ENV]!r}.") from None
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    free = _meminfo_available()
    limit = _cgroup_free()
    candidates = [x for x in (free, limit) if x is not None]
    if not candidates:
        return None
    # The processes of a data-parallel run on this node (torchrun's LOCAL_WORLD_SIZE) share
    # its memory: each plans for its share (each GPU rank has a device of its own).
    return min(candidates) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return None


def _cgroup_free() -> int | None:
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 2**60:
            return None
        return max(0, int(limit) - usage)
    return None


def runtime_bytes(device: str | torch.device) -> int:
    return RUNTIME_CUDA if torch.device(device).type == "cuda" else RUNTIME_CPU


def parameter_bytes(model: torch.nn.Module, dtype: str) -> int:
    """The model's weights in `dtype` (a `meta` skeleton counts the same as the loaded model)."""
    return sum(p.numel() for p in model.parameters()) * DTYPE_BYTES[dtype]


@dataclass(frozen=True)
class Shapes:
    """What the activation estimate reads from a model's config."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    vocab: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> Shapes:
        c = model.config
        c = getattr(c, "text_config", None) or c
        hidden = getattr(c, "hidden_size", None) or c.n_embd
        return cls(
            hidden=hidden,
            intermediate=getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None)
            or 4 * hidden,
            layers=getattr(c, "num_hidden_layers", None) or c.n_layer,
            heads=getattr(c, "num_attention_heads", None) or c.n_head,
            vocab=c.vocab_size,
        )


def pass_bytes(shapes: Shapes, batch: int, tokens: int, logit_positions: int, dtype: str,
               stat_inputs: bool = True) -> int:
    """One batched forward and backward pass with frozen weights: what autograd keeps for the
    backward (per block ~12 hidden-sized and 4 intermediate-sized tensors, and the attention
    scores), the logits at `logit_positions` positions (in the model's dtype, their fp32 copy and
    its gradient), and, with `stat_inputs`, the engine's fp32 copies of every tracked matrix's
    input, kept for the whole batch (influence/engine.py)."""
    size = DTYPE_BYTES[dtype]
    per_block = batch * tokens * (12 * shapes.hidden + 4 * shapes.intermediate) * size
    per_block += batch * shapes.heads * tokens * tokens * size
    logits = batch * logit_positions * shapes.vocab * (size + 4 + 4)
    inputs = batch * tokens * (3 * shapes.hidden + shapes.intermediate) * 4 if stat_inputs else 0
    return shapes.layers * (per_block + inputs) + logits


def statistics_bytes(matrices: Sequence, batch: int, tokens: int) -> int:
    """The largest one matrix's per-example statistics need at a time (the engine hands one
    matrix at a time to the estimator): its output gradients D, and either the two Gram
    matrices of the factored norm or the dense per-example gradients when those are smaller."""
    worst = 0
    for m in matrices:
        factored = tokens * (m.d_in + m.d_out) < m.d_in * m.d_out
        stats = 2 * batch * tokens * tokens if factored else 2 * batch * m.d_in * m.d_out
        worst = max(worst, (batch * tokens * m.d_out + stats) * 4)
    return worst


def plan_scoring(model: torch.nn.Module, matrices: Sequence, estimator, *, device: str,
                 dtype: str, batch: int, tokens: int, logit_positions: int,
                 n_train: int | None, cache: int = 0) -> MemoryPlan:
    """The plan of `score`: model a skeleton or the loaded model; n_train None (the data not
    read yet) leaves out the parts that grow with it; cache: the bytes cached mode keeps on this
    process (influence/engine.cache_bytes), 0 for streaming."""
    plan = MemoryPlan("score", str(device), available=available_bytes(device))
    plan.parts["runtime"] = runtime_bytes(device)
    plan.parts[f"weights ({dtype})"] = parameter_bytes(model, dtype)
    plan.parts.update(estimator.state_bytes(matrices, n_train or 0))
    if n_train is None:
        return plan
    plan.parts[f"pass (batch {batch} x {tokens} tokens)"] = pass_bytes(
        Shapes.of(model), batch, tokens, logit_positions, dtype)
    plan.parts["one matrix's statistics"] = statistics_bytes(matrices, batch, tokens)
    plan.parts["per-example results"] = n_train * len(matrices) * 3 * 8
    if cache:
        plan.parts[CACHE_PART] = cache
    return plan


def plan_pruning(model: torch.nn.Module, pruner, *, device: str, dtype: str, nsamples: int,
                 seqlen: int) -> MemoryPlan:
    """The plan of `prune` (pruning/prune.py): the model waits on the CPU and one block at a
    time runs on `device`; the calibration activations (each block's inputs and outputs for
    every sample) stay on the CPU. On the CPU that is one plan; on a GPU the plan counts the GPU
    and a note gives the CPU's share. pruner: a Pruner (its statistics and working set)."""
    from .models import discover_blocks

    shapes = Shapes.of(model)
    size = DTYPE_BYTES[dtype]
    blocks = discover_blocks(model)
    block_bytes = max(sum(m.numel for m in b.matrices) for b in blocks) * size
    host = {"weights": parameter_bytes(model, dtype), "calibration activations":
            0 if not pruner.needs_calibration else 2 * nsamples * seqlen * shapes.hidden * size}
    on_gpu = torch.device(device).type == "cuda"
    plan = MemoryPlan(f"prune ({pruner.name})", str(device), available=available_bytes(device))
    plan.parts["runtime"] = runtime_bytes(device)
    plan.parts[f"weights ({dtype})"] = block_bytes if on_gpu else host["weights"]
    if pruner.needs_calibration:
        if not on_gpu:
            plan.parts[f"calibration activations ({nsamples} x {seqlen} tokens, in and out)"] = (
                host["calibration activations"])
        # one sample through one block without gradients, and the fp32 copy of a matrix input
        # the statistics hooks make
        plan.parts["one block's forward"] = seqlen * (
            (4 * shapes.hidden + 3 * shapes.intermediate) * size
            + shapes.heads * seqlen * size + max(shapes.hidden, shapes.intermediate) * 4)
        if pruner.statistics == "hessian":
            plan.parts["input statistics (fp32 Hessians)"] = max(
                sum(4 * m.d_in**2 for m in b.matrices) for b in blocks)
    plan.parts["pruning one matrix"] = max(
        pruner.working_bytes(m.d_out, m.d_in) for b in blocks for m in b.matrices)
    if on_gpu:
        host_total = RUNTIME_CPU + sum(host.values())
        plan.notes.append(f"on the CPU meanwhile: the model and the calibration activations, "
                          f"{gib(host_total)} of {gib(available_bytes('cpu'))} free")
    return plan


def plan_finetuning(model: torch.nn.Module, adapter_parameters: int, adapter_bytes_per_token: int,
                    *, device: str, dtype: str, adapter_dtype: str, batch: int, tokens: int
                    ) -> MemoryPlan:
    """The plan of `finetune-moe` (training.py): frozen weights, the adapters with their
    gradients and AdamW's two moments, and one training step's activations: the base model's
    and the adapters' (`adapter_bytes_per_token`, moe/lora_moe.adapter_footprint)."""
    plan = MemoryPlan("finetune", str(device), available=available_bytes(device))
    plan.parts["runtime"] = runtime_bytes(device)
    plan.parts[f"weights ({dtype})"] = parameter_bytes(model, dtype)
    plan.parts[f"adapters, gradients, AdamW state ({adapter_dtype})"] = (
        adapter_parameters * DTYPE_BYTES[adapter_dtype] * 4)
    plan.parts[f"step (batch {batch} x {tokens} tokens)"] = pass_bytes(
        Shapes.of(model), batch, tokens, tokens, dtype, stat_inputs=False) + (
        batch * tokens * adapter_bytes_per_token)
    return plan


def release_freed_memory() -> None:
    """Give the memory the process has freed back to the system. glibc keeps freed heap pages
    (a cached scoring's gradient statistics: 5.1 of 5.6 GiB resident after SmolLM2 with 64
    examples were freed but kept), so a long `experiment run` would hold the peak of its
    largest cell for every later one; malloc_trim returns them. A no-op without glibc."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    libc = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None
    if trim is not None:
        trim(0)
