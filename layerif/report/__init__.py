"""Tables and plots of layer profiles and expert allocations."""

from .plots import (
    plot_expert_allocations,
    plot_layer_profiles,
    plot_search_trajectories,
    plot_sensitivity,
)
from .tables import format_layer_table

__all__ = ["format_layer_table", "plot_expert_allocations", "plot_layer_profiles",
           "plot_search_trajectories", "plot_sensitivity"]
