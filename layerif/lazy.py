"""Package exports resolved on first use (PEP 562), so that importing a package costs only what
the caller touches: the CLI builds its parsers without importing torch, transformers or scipy."""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable, Callable]:
    """(__getattr__, __dir__) for the `__init__` of `package`, whose public names are the keys
    of `exports` (name -> the submodule, relative to the package, that defines it).

        __getattr__, __dir__ = lazy_exports(__name__, {"load_model": "models", ...})
    """

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{exports[name]}", package), name)
        setattr(sys.modules[package], name, value)  # once resolved, a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__


def no_grad(fn: Callable) -> Callable:
    """`@torch.no_grad()` for modules that import torch only when they compute: torch is
    imported on the first call, not when the module is."""

    @functools.wraps(fn)
    def without_grad(*args, **kwargs):
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return without_grad
