"""sensitivity.json: a measured sensitivity and how it was made, written with its heat map.

Fields: layerif_version, model, model_fingerprint, pruner, levels (K), layers (L),
params_per_layer, dense_nll (nats per token), delta / low / high (L x K: D_l(s) and its bootstrap
95% interval), window_delta (L x K x W: each held window's difference), held and calibration
({source, windows or nsamples, seqlen, seed}), provenance (their content sets), bootstrap,
seed, machine (environment.machine_record of the run that finished it), seconds (the
measurement's compute time, blocks stored by an interrupted run included), block_seconds (L:
each block's trials), resumed_seconds (the part loaded from such a run), additivity ([{name,
ratios, predicted, measured}]: whole-model allocations, the sum of the D_l(s_l) against the
measured increase).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .. import __version__
from ..io import atomic_dir, write_json
from .measure import Sensitivity, SensitivityError, check_levels

FILE = "sensitivity.json"
PLOT = "sensitivity.png"


def save(folder: str | Path, result: Sensitivity, meta: dict) -> Path:
    """Write FOLDER/sensitivity.json and FOLDER/sensitivity.png, all or nothing."""
    from ..report import plot_sensitivity

    record = {
        "layerif_version": __version__, **meta, "levels": result.levels,
        "layers": result.layers, "params_per_layer": result.params_per_layer,
        "dense_nll": result.dense_nll, "dense_window_nll": result.dense_window_nll,
        "delta": result.delta.tolist(), "low": result.low.tolist(),
        "high": result.high.tolist(), "window_delta": result.window_delta.tolist(),
        "seconds": round(result.seconds, 1), **result.extra}
    with atomic_dir(folder, owned_files={FILE, PLOT}) as tmp:
        write_json(tmp / FILE, record)
        plot_sensitivity(result.layers, result.levels, result.delta, tmp / PLOT,
                         title=f"{meta.get('model', '')}: NLL increase, one block pruned "
                         f"({meta.get('pruner', '')})")
    return Path(folder)


def load(path: str | Path) -> tuple[Sensitivity, dict]:
    """(the measurement, the whole record) of FOLDER or FOLDER/sensitivity.json; a file that is
    not one is refused, naming it."""
    path = Path(path)
    path = path / FILE if path.is_dir() else path
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SensitivityError(f"{path}: no such sensitivity file (run `layerif sensitivity`)."
                               ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SensitivityError(f"{path}: not a sensitivity file ({exc}).") from None
    try:
        levels = check_levels(data["levels"], f"{path}: levels")
        delta = np.asarray(data["delta"], dtype=np.float64)
        L = len(data["layers"])
        if delta.shape != (L, len(levels)) or len(data["params_per_layer"]) != L:
            raise ValueError(f"delta is {delta.shape}, expected ({L}, {len(levels)})")
        if not np.isfinite(delta).all() or not math.isfinite(float(data["dense_nll"])):
            raise ValueError("non-finite values")
        result = Sensitivity(levels, list(data["layers"]), list(data["params_per_layer"]),
                             float(data["dense_nll"]), list(data["dense_window_nll"]), delta,
                             np.asarray(data["low"]), np.asarray(data["high"]),
                             np.asarray(data["window_delta"]), float(data.get("seconds", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise SensitivityError(f"{path}: not a sensitivity file ({exc}).") from None
    data["_path"] = str(path)
    return result, data
