"""Report helpers: the layer table's layout and the plots (PNG files written whole, no temp files
left behind, one bar per layer for each allocation)."""

from __future__ import annotations

from layerif.report import format_layer_table, plot_expert_allocations, plot_layer_profiles


def test_layer_table_rows_and_columns():
    table = format_layer_table([0, 1, 2], {"boolq": [1.0, -2.5, 3e-7], "arc": [0.5, 0.25, 0]})
    lines = table.splitlines()
    assert lines[0].split() == ["layer", "boolq", "arc"] and len(lines) == 5
    assert lines[3].split() == ["1", "-2.5", "0.25"] and lines[4].split() == ["2", "3e-07", "0"]


def test_plots_are_written_atomically(tmp_path, monkeypatch):
    import matplotlib.axes

    bars = []
    real_bar = matplotlib.axes.Axes.bar
    monkeypatch.setattr(matplotlib.axes.Axes, "bar",
                        lambda self, x, h, **k: bars.append(list(h)) or real_bar(self, x, h, **k))
    allocations = {"layerif": [3, 2, 2, 1], "uniform": [2, 2, 2, 2], "mola 2468": [2, 4, 6, 8]}
    out = plot_expert_allocations([0, 1, 2, 3], allocations, tmp_path / "f" / "experts.png")
    assert bars == list(allocations.values())
    profile = plot_layer_profiles([0, 1, 2], {"a": [1, 2, 3], "flat": [1, 1, 1]},
                                  tmp_path / "profile.png")
    for path in (out, profile):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "experts.png", "profile.png"]
