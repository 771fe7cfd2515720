"""Which machine and build computed a result, as recorded in every experiment cell.

Float results repeat bit for bit on one machine and build, not across them: the kernels torch
dispatches to depend on the CPU's instruction set (AVX2, AVX-512) and the order of a parallel
sum on the thread count, and a SparseGPT prune at 70% turns last-bit differences of its
calibration pass into other weights (docs/experiments.md measures 2-8% in held perplexity). A
cell therefore records where it ran, and a report says when a grid's cells come from more than
one machine.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from importlib import metadata


@functools.cache
def _static_record() -> dict:
    import torch  # (here, not above: a report names machines without importing torch)

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass  # not Linux: platform's answer
    record = {"cpu": cpu, "isa": torch.backends.cpu.get_cpu_capability(),
              "torch": torch.__version__}
    with contextlib.suppress(metadata.PackageNotFoundError):
        record["transformers"] = metadata.version("transformers")
    if torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name()
    return record


def machine_record() -> dict:
    """{"cpu": model name, "isa": torch's CPU capability ("AVX512"), "threads": torch's
    intra-op threads now, "torch", "transformers" versions, "gpu": name when one is visible}."""
    import torch

    return {**_static_record(), "threads": torch.get_num_threads()}


def describe_machine(record: dict) -> str:
    """One line: "AMD EPYC (AVX512), 2 threads, torch 2.13.0+cpu, transformers 5.23.0"."""
    parts = [f"{record.get('cpu', '?')} ({record.get('isa', '?')})",
             f"{record.get('threads', '?')} threads", f"torch {record.get('torch', '?')}"]
    if "transformers" in record:
        parts.append(f"transformers {record['transformers']}")
    if "gpu" in record:
        parts.append(f"GPU {record['gpu']}")
    return ", ".join(parts)
