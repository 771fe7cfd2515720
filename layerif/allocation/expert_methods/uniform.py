"""Uniform: every layer weighted equally (the leftover of an uneven split to earlier layers)."""

from __future__ import annotations

import numpy as np

from .base import ExpertInputs, ExpertMethod, register


@register
class Uniform(ExpertMethod):
    name = "uniform"

    def weights(self, inputs: ExpertInputs):
        return np.ones(inputs.n_layers), None, {}
