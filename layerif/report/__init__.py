"""Tables and plots of layer profiles."""

from .plots import plot_layer_profiles
from .tables import format_layer_table

__all__ = ["format_layer_table", "plot_layer_profiles"]
