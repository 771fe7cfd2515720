"""Fine-tuning a LoRA-MoE (`layerif finetune-moe`): the paper's recipe as defaults (rank 8,
alpha 16, dropout 0.05, lr 3e-4, all seven projections), a progress bar with the running loss, a
checkpoint after every epoch and resumption after an interruption (to the same result: the data
order and dropout are seeded per epoch). The seed fixes everything random: the adapters' initial
values (one seeded generator), the data order and dropout, so the same call in two processes
writes byte-identical adapters on CPU."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data import batch_losses, encode_examples, make_batches
from ..errors import LayerIFError
from ..io import write_json
from .lora_moe import MoEConfig, adapter_state, apply_lora_moe, aux_loss, save_adapters

log = logging.getLogger(__name__)


@dataclass
class FinetuneArguments:
    epochs: int = 3
    lr: float = 3e-4
    batch_size: int = 4
    max_length: int = 256
    balance_coef: float = 0.001
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0 or self.balance_coef < 0:
            raise LayerIFError("need epochs >= 1, batch_size >= 1, lr > 0, balance_coef >= 0.")


def _save_checkpoint(folder: Path, model, optimizer, epoch: int, history: list, key: dict):
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ckpt.", dir=folder))
    torch.save({"adapter": adapter_state(model), "optimizer": optimizer.state_dict(),
                "epoch": epoch, "history": history, "key": key}, tmp / "state.pt")
    os.replace(tmp / "state.pt", folder / "state.pt")
    shutil.rmtree(tmp, ignore_errors=True)


def finetune_moe(model, tokenizer, config: MoEConfig, train_examples, out_dir: str | Path,
                 args: FinetuneArguments | None = None, progress: bool = True, *,
                 provenance: dict | None = None) -> dict:
    """Train adapters and routers on `train_examples`; writes out_dir (adapters, config,
    training.json). A checkpoint in out_dir/.checkpoint is resumed when it matches.
    provenance: recorded in training.json, e.g. {"train": "mrpc:validation[0:200]", "scores":
    "runs/s/scores.json"}, so that evaluation can refuse slices overlapping them."""
    args = args or FinetuneArguments()
    out_dir = Path(out_dir)
    ckpt_dir = out_dir.parent / f".{out_dir.name}.checkpoint"
    apply_lora_moe(model, config, seed=args.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr)
    encoded = encode_examples(list(train_examples), tokenizer, args.max_length)
    key = {"config": asdict(config), "args": asdict(args), "n": len(encoded),
           "first": encoded[0].input_ids[:16]}
    start_epoch, history = 0, []
    if (ckpt_dir / "state.pt").exists():
        state = torch.load(ckpt_dir / "state.pt", weights_only=False)
        if state["key"] == key:
            model.load_state_dict(state["adapter"], strict=False)
            optimizer.load_state_dict(state["optimizer"])
            start_epoch, history = state["epoch"] + 1, state["history"]
            log.info("resuming after epoch %d from %s", state["epoch"] + 1, ckpt_dir)
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    for epoch in range(start_epoch, args.epochs):
        gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        order = torch.randperm(len(encoded), generator=gen).tolist()
        batches = make_batches([encoded[i] for i in order], args.batch_size,
                               tokenizer.pad_token_id)
        torch.manual_seed(args.seed * 1000 + epoch)  # dropout
        model.train()
        running, bar = [], tqdm(batches, desc=f"epoch {epoch + 1}/{args.epochs}",
                                disable=not progress, leave=False)
        for batch in bar:
            batch = batch.to(device)
            loss = batch_losses(model, batch).mean()
            total = loss + args.balance_coef * aux_loss(model).to(loss.device)
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            running.append(loss.item())
            bar.set_postfix(loss=f"{sum(running[-20:]) / len(running[-20:]):.4f}")
        history.append({"epoch": epoch + 1, "loss": sum(running) / len(running)})
        _save_checkpoint(ckpt_dir, model, optimizer, epoch, history, key)
    model.eval()
    save_adapters(model, config, out_dir)
    summary = {**(provenance or {}), "history": history,
               "seconds": round(time.perf_counter() - t0, 2), "arguments": asdict(args),
               "experts": config.experts}
    write_json(out_dir / "training.json", summary)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return summary
