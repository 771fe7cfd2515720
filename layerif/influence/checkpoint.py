"""Resumable scoring: the results of finished steps (validation gradient, pass statistics, ...)
are kept in a folder, so a run that was killed resumes after its last finished step.

The folder holds `fingerprint.json` (model, data, options) and one `<step>.pt` per finished step,
each written atomically. A folder whose fingerprint differs is started afresh, never mixed in.
In a data-parallel run each rank keeps its own folder, and a step is reused only when every rank
has it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from ..io import current_umask
from .distributed import DataParallel

log = logging.getLogger(__name__)
T = TypeVar("T")


class StepCache:
    """`cache(step, compute)` returns the saved result of `step`, or computes and saves it.

    With folder=None nothing is saved (the default for in-memory use)."""

    def __init__(self, folder: str | Path | None = None, fingerprint: dict | None = None,
                 parallel: DataParallel | None = None):
        self.folder = Path(folder) if folder is not None else None
        self.parallel = parallel  # a step is loaded only when every rank has it saved
        self.resumed: list[str] = []
        if self.folder is None:
            return
        stamp = self.folder / "fingerprint.json"
        text = json.dumps(fingerprint or {}, sort_keys=True)
        if self.folder.exists() and (not stamp.exists() or stamp.read_text() != text):
            log.info("checkpoint %s belongs to another run; starting afresh", self.folder)
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp.write_text(text)

    def __call__(self, step: str, compute: Callable[[], T]) -> T:
        if self.folder is None:
            return compute()
        path = self.folder / f"{step}.pt"
        saved = path.exists()
        if self.parallel is not None:
            # a rank killed before saving a step others saved recomputes it with them: the
            # step's all-reduces need every rank
            saved = self.parallel.all(saved)
        if saved:
            self.resumed.append(step)
            log.info("resuming: step %r loaded from %s", step, path)
            return torch.load(path, weights_only=True)
        value = compute()
        fd, tmp = tempfile.mkstemp(prefix=f".{step}.", dir=self.folder)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs follow the umask
        try:
            torch.save(value, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return value

    def clear(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
