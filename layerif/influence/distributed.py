"""Data-parallel scoring on torch.distributed (`torchrun --nproc_per_node N -m layerif score`).

Every quantity an estimator reads from a gradient source is a sum over examples: the mean
validation gradient, the per-example statistics (one row per example, zero on the rows another
rank holds) and the u_m accumulators. So each rank runs the unchanged engine on its shard of the
batches (batch b goes to rank b mod N; the batches are the single-process ones, so each batch's
arithmetic is the single process's), and the sources all-reduce those sums; every rank then
holds the whole result and rank 0 writes it. Per-example rows are exact; the u_m and mean
gradients differ from one process's only in the order their fp32 batch parts are added, so the
influences agree to fp32 rounding of those sums (measured: ~1e-8 of the largest influence).

Backend gloo on CPU, nccl on CUDA. A model too large for one device is out of scope here: under
FSDP each rank would hold a shard of every matrix, so the per-matrix statistics (dots, norms,
u_m) would be computed on the shard and all-reduced across the shard group as well as the data
group; the sources are the one place that would change.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import LayerIFError

log = logging.getLogger(__name__)


class DistributedError(LayerIFError):
    """A data-parallel run that cannot work as launched."""


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run: `rank` of `world_size` processes."""

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: str | None = None) -> tuple[DataParallel | None, str | None]:
        """(the run torchrun, or any launcher setting RANK and WORLD_SIZE, started, with its
        process group initialised; this rank's device) or (None, `device`) for a single
        process. device: the requested one (None: cuda if any); a CUDA run gives each rank the
        GPU of its LOCAL_RANK and uses nccl, a CPU run gloo."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None, device
        import torch.distributed as dist

        cuda = torch.cuda.is_available() and not (device or "cuda").startswith("cpu")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if cuda:
            if local >= torch.cuda.device_count():
                raise DistributedError(
                    f"process {local} of {world} on this node has no GPU (there are "
                    f"{torch.cuda.device_count()}); use --nproc_per_node "
                    f"{torch.cuda.device_count()} or --device cpu.")
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if cuda else "gloo")
        return cls(dist.get_rank(), dist.get_world_size()), (f"cuda:{local}" if cuda else "cpu")

    def shard(self, batches: Sequence, what: str) -> list:
        """This rank's batches: every world_size-th, starting at its rank. Each rank needs one
        (a rank with nothing would not know the shapes it must reduce)."""
        if len(batches) < self.world_size:
            raise DistributedError(
                f"{what}: {len(batches)} batches for {self.world_size} processes; every process "
                "needs at least one. Use fewer processes (--nproc_per_node) or a smaller "
                "--batch-size.")
        return list(batches[self.rank :: self.world_size])

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of `tensor` over the ranks, in place (and returned)."""
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all(self, flag: bool) -> bool:
        """True when `flag` is true on every rank (e.g. every rank has a step saved)."""
        import torch.distributed as dist

        value = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self._device())
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item())

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    @staticmethod
    def _device() -> torch.device:
        import torch.distributed as dist

        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

