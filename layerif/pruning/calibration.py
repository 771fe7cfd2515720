"""Block-by-block calibration (SPEC section 5): each decoder block sees the outputs of the
already-pruned block before it, and only one block and its activations are on the device at once.

Every argument a decoder block receives is captured per block, not just for block 0: transformers
passes position embeddings, masks and position ids (as keywords, and for GPT-2 some
positionally), and some architectures (Gemma3's sliding/global layers) give different blocks
different masks and rotary tables. The capture runs the model's forward once per sample with
every block replaced by a pass-through stub that records its inputs, so no block computes
anything and the embeddings/mask/rope code of the model itself produces the arguments.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..models import Block, discover_blocks

Call = tuple[tuple, dict]  # (positional args after hidden_states, keyword args)


@dataclass
class CapturedInputs:
    """hidden: per sample, the first block's input (1, T, d). calls[i][s]: the other arguments
    block i received for sample s (tensors shared between blocks are stored once)."""

    hidden: list[torch.Tensor]
    calls: list[list[Call]]


def _block_modules(model: nn.Module) -> list[nn.Module]:
    blocks = discover_blocks(model)
    return [model.get_submodule(b.path) for b in blocks]


@contextlib.contextmanager
def _stubbed(blocks: Sequence[nn.Module], record: Callable[[int, tuple, dict], None]) -> Iterator:
    def make_stub(i: int):
        def stub(hidden_states, *args, **kwargs):
            record(i, (hidden_states, *args), kwargs)
            return hidden_states

        return stub

    for i, block in enumerate(blocks):
        block.forward = make_stub(i)  # instance attribute shadows the class's forward
    try:
        yield
    finally:
        for block in blocks:
            del block.forward


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_to(o, device) for o in obj)
    if isinstance(obj, list):
        return [_to(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


@torch.no_grad()
def capture_block_inputs(model: nn.Module, samples: Sequence[torch.Tensor],
                         store: str = "cpu") -> CapturedInputs:
    """Run each sample (a (1, T) or (T,) token tensor) through the model with stubbed blocks."""
    blocks = _block_modules(model)
    device = next(model.parameters()).device
    hidden: list[torch.Tensor] = []
    calls: list[list[Call]] = [[] for _ in blocks]

    def record(i: int, args: tuple, kwargs: dict) -> None:
        if i == 0:
            hidden.append(args[0].detach().to(store))
        kwargs = {k: v for k, v in kwargs.items() if k not in ("past_key_values", "use_cache")}
        calls[i].append((_to(args[1:], store), _to(kwargs, store)))

    with _stubbed(blocks, record):
        for ids in samples:
            ids = ids.view(1, -1).to(device)
            model(input_ids=ids, use_cache=False)
    return CapturedInputs(hidden, calls)


def block_output(out) -> torch.Tensor:
    """Decoder blocks return the hidden states, or a tuple starting with them (older versions)."""
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def forward_block(module: nn.Module, captured: CapturedInputs, i: int,
                  inputs: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Block i's outputs for every sample: `inputs` (one hidden state per sample, on its own
    device) with the other arguments the block received for that sample; each output goes back
    to its input's device."""
    outs = []
    for s, h in enumerate(inputs):
        args, kwargs = captured.calls[i][s]
        out = module(h.to(device), *_to(args, device), **_to(kwargs, device))
        outs.append(block_output(out).to(h.device))
    return outs


@torch.no_grad()
def run_blocks(
    model: nn.Module,
    captured: CapturedInputs,
    on_block: Callable[[int, Block, nn.Module, Callable[[], None]], None] | None = None,
    device: str | torch.device | None = None,
) -> list[torch.Tensor]:
    """Feed the captured inputs through the blocks one at a time and return the last outputs.

    on_block(i, block, module, forward_all) runs before block i's outputs are computed; it may
    call forward_all() (one pass of all samples through the block, e.g. to collect statistics
    with hooks) and then change the block's weights. The outputs that feed block i + 1 are
    computed afterwards, from the changed block; an on_block that leaves the weights alone may
    return the outputs of its own forward_all() instead, which saves that second pass.
    """
    specs = discover_blocks(model)
    modules = [model.get_submodule(b.path) for b in specs]
    home = next(model.parameters()).device
    device = torch.device(device) if device is not None else home
    hidden = captured.hidden
    for i, (spec, module) in enumerate(zip(specs, modules, strict=True)):
        module.to(device)

        def forward_all(i=i, module=module, inputs=hidden) -> list[torch.Tensor]:
            return forward_block(module, captured, i, inputs, device)

        unchanged = on_block(i, spec, module, forward_all) if on_block is not None else None
        hidden = unchanged if unchanged is not None else forward_all()
        module.to(home)
    return hidden


@contextlib.contextmanager
def tail_from(model: nn.Module, l: int, hidden: Sequence[torch.Tensor],
              record: Callable[[int, torch.Tensor], None] | None = None) -> Iterator[list[int]]:
    """While active, model(input_ids=window s) runs blocks l..L-1 on `hidden[s]` (block l's
    cached input): blocks before l are pass-through stubs and block l's hidden state is swapped
    in, so the model's own embedding, mask, rotary and head code supplies everything else.
    record(i, h), when given, sees the input hidden state of every block i >= l. Yields a
    one-element list holding the index of the next window."""
    blocks = _block_modules(model)
    which = [0]

    def swap(_module, args, kwargs):
        h = hidden[which[0]].to(next(_module.parameters()).device)
        if args:
            return (h, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": h}

    def recorder(i: int):
        def hook(_module, args, kwargs):
            record(i, args[0] if args else kwargs["hidden_states"])

        return hook

    handles = [blocks[l].register_forward_pre_hook(swap, with_kwargs=True)]
    if record is not None:  # (registered after the swap, so block l records the swapped state)
        handles += [blocks[i].register_forward_pre_hook(recorder(i), with_kwargs=True)
                    for i in range(l, len(blocks))]
    try:
        with _stubbed(blocks[:l], lambda *_: None):
            yield which
    finally:
        for handle in handles:
            handle.remove()
