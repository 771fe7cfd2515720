"""The adapter training loop that `finetune-moe` and `finetune-lora` share: AdamW over the
trainable parameters, a progress bar with the running loss, a checkpoint after every epoch and
resumption after an interruption to the same result (the data order and dropout are seeded per
epoch, the optimiser state is kept). Within an epoch a checkpoint is also written every
CHECKPOINT_SECONDS (with the dropout generator's state and the epoch's losses so far), so that
an epoch of hours (a 0.5B model on 2 cores) does not restart from its first step. The seed fixes
everything random the loop draws, so the same call in two processes trains byte-identical
adapters on CPU."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .data import batch_losses, encode_examples, make_batches
from .errors import LayerIFError

log = logging.getLogger(__name__)


@dataclass
class FinetuneArguments:
    epochs: int = 3
    lr: float = 3e-4
    batch_size: int = 4
    max_length: int = 256  # tokens per example, prompt and answer
    balance_coef: float = 0.001  # LoRA-MoE's load-balancing loss weight (unused by plain LoRA)
    seed: int = 0
    # batches of examples of similar length (transformers' `group_by_length`): less padding,
    # e.g. 34% fewer tokens per epoch on SciQ with its support paragraphs at 384 tokens
    group_by_length: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0 or self.balance_coef < 0:
            raise LayerIFError("need epochs >= 1, batch_size >= 1, lr > 0, balance_coef >= 0.")

    def steps(self, n_examples: int) -> int:
        """Optimiser steps of the whole run."""
        return self.epochs * -(-n_examples // self.batch_size)


CHECKPOINT_SECONDS = 600.0  # a checkpoint within an epoch at most this often (a save is ~1 s)
MEGABATCH_BATCHES = 50  # transformers' LengthGroupedSampler sorts within 50 batches at a time


def epoch_batches(lengths: list[int], batch_size: int, generator: torch.Generator,
                  group_by_length: bool = False) -> list[list[int]]:
    """One epoch's batches as lists of example indices, from a seeded shuffle.

    Plain: consecutive batch_size chunks of the shuffle. group_by_length: as transformers'
    LengthGroupedSampler, the shuffle is cut into megabatches of 50 batches, each sorted by
    length (longest first) and cut into batches; the batches' order is then shuffled too
    (transformers keeps it longest-first within a megabatch, a length curriculum)."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if group_by_length:
        size = MEGABATCH_BATCHES * batch_size
        order = [i for start in range(0, len(order), size)
                 for i in sorted(order[start:start + size], key=lambda i: -lengths[i])]
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    if group_by_length:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
    return batches


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The parameters that train, on the CPU (what a checkpoint keeps)."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()
            if p.requires_grad}


def checkpoint_dir(out_dir: str | Path) -> Path:
    """Where the run writing `out_dir` keeps its checkpoint (beside it, hidden)."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.checkpoint"


def _save_checkpoint(folder: Path, model, optimizer, epoch: int, history: list, key: dict,
                     seconds: float, position: dict | None = None):
    """Keep the state after `epoch` (0-based) finished, or, with `position` ({"batches": steps
    done in epoch + 1, "running": their losses, "rng": the dropout generators' states}), within
    the next epoch; `seconds`: training time so far, earlier runs included."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ckpt.", dir=folder))
    torch.save({"adapter": trainable_state(model), "optimizer": optimizer.state_dict(),
                "epoch": epoch, "history": history, "key": key, "position": position,
                "seconds": seconds},
               tmp / "state.pt")
    os.replace(tmp / "state.pt", folder / "state.pt")
    shutil.rmtree(tmp, ignore_errors=True)


def train_adapters(
    model,
    tokenizer,
    train_examples,
    args: FinetuneArguments,
    out_dir: str | Path,
    key: dict,
    *,
    extra_loss: Callable[[], torch.Tensor] | None = None,
    after_step: Callable[[int], None] | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> tuple[list[dict], float]:
    """Train `model`'s trainable parameters on `train_examples` (mean token NLL of the answers).

    key: what identifies the run (config, arguments); a checkpoint of `out_dir` is resumed only
    when its key equals this one. extra_loss: added to each step's loss (LoRA-MoE's balancing
    loss). after_step(step): called after each optimiser step while the gradients are still
    there (AdaLoRA's rank update, which reads them and then masks the updated singular values;
    called before the step, the step would undo its mask). on_epoch({"epoch", "loss"}): called
    as each epoch ends (and for each one a resumed checkpoint had finished), so that a caller
    can report it at once.
    Returns (per-epoch history [{"epoch", "loss"}], seconds of training, a resumed run's earlier
    ones included)."""
    ckpt_dir = checkpoint_dir(out_dir)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr)
    encoded = encode_examples(list(train_examples), tokenizer, args.max_length)
    key = {**key, "args": asdict(args), "n": len(encoded), "first": encoded[0].input_ids[:16]}
    start_epoch, history, position, earlier = 0, [], None, 0.0
    if (ckpt_dir / "state.pt").exists():
        state = torch.load(ckpt_dir / "state.pt", weights_only=False)
        if state["key"] == key:
            model.load_state_dict(state["adapter"], strict=False)
            optimizer.load_state_dict(state["optimizer"])
            start_epoch, history = state["epoch"] + 1, state["history"]
            position = state.get("position")  # (absent in an epoch-end checkpoint)
            earlier = state.get("seconds", 0.0)
            log.info("resuming %s from %s", f"epoch {start_epoch + 1} after step "
                     f"{position['batches']}" if position else f"after epoch {start_epoch}",
                     ckpt_dir)
    report = on_epoch or (lambda _entry: None)
    for entry in history:
        report(entry)
    device = next(p for p in model.parameters() if p.requires_grad).device
    step = start_epoch * -(-len(encoded) // args.batch_size)
    t0 = last_save = time.perf_counter()

    def elapsed() -> float:  # training seconds, a resumed run's earlier ones included
        return earlier + time.perf_counter() - t0

    for epoch in range(start_epoch, args.epochs):
        gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        groups = epoch_batches([len(e.input_ids) for e in encoded], args.batch_size, gen,
                               args.group_by_length)
        batches = [make_batches([encoded[i] for i in group], len(group),
                                tokenizer.pad_token_id)[0] for group in groups]
        torch.manual_seed(args.seed * 1000 + epoch)  # dropout
        running: list[float] = []
        if position is not None and epoch == start_epoch:  # within the epoch: where it stopped
            running, done = list(position["running"]), position["batches"]
            _set_dropout_rng(position["rng"])
            batches, step = batches[done:], step + done
        model.train()
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not progress,
                   leave=False, initial=len(running), total=len(running) + len(batches))
        for batch in bar:
            batch = batch.to(device)
            loss = batch_losses(model, batch).mean()
            total = loss if extra_loss is None else loss + extra_loss().to(loss.device)
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            if after_step is not None:
                after_step(step)
            step += 1
            running.append(loss.item())
            bar.set_postfix(loss=f"{sum(running[-20:]) / len(running[-20:]):.4f}")
            if time.perf_counter() - last_save >= CHECKPOINT_SECONDS:
                _save_checkpoint(ckpt_dir, model, optimizer, epoch - 1, history, key, elapsed(),
                                 {"batches": len(running), "running": list(running),
                                  "rng": _dropout_rng()})
                last_save = time.perf_counter()
        history.append({"epoch": epoch + 1, "loss": sum(running) / len(running)})
        _save_checkpoint(ckpt_dir, model, optimizer, epoch, history, key, elapsed())
        last_save = time.perf_counter()
        report(history[-1])
    model.eval()
    return history, elapsed()


def _dropout_rng() -> dict:
    """The states of the generators dropout draws from (torch's CPU one; CUDA's where used)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_dropout_rng(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def finish(out_dir: str | Path) -> None:
    """Drop the checkpoint of a run whose output is written."""
    shutil.rmtree(checkpoint_dir(out_dir), ignore_errors=True)
