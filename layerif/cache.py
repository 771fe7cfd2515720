"""Where layerif keeps what it makes once: de-quantised weights, assembled model files, locks."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$LAYERIF_CACHE`, default `~/.cache/layerif`."""
    return Path(os.environ.get("LAYERIF_CACHE", Path.home() / ".cache" / "layerif"))
