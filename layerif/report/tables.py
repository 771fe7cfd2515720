"""Plain-text tables of per-layer scores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def format_layer_table(layers: Sequence[int], profiles: Mapping[str, Sequence[float]]) -> str:
    """One row per layer, one column per profile (e.g. per task), in %.4g."""
    names = list(profiles)
    cells = [[str(layer)] + [f"{profiles[n][i]:.4g}" for n in names] for i, layer in
             enumerate(layers)]
    header = ["layer", *names]
    widths = [max(len(r[j]) for r in [header, *cells]) for j in range(len(header))]
    line = lambda row: "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in cells])
