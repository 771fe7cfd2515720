"""Measured per-block sensitivity (`layerif sensitivity`): the ground truth a layer score is held
against, and the file it is kept in."""

from .files import load, save
from .measure import (
    Sensitivity,
    SensitivityError,
    check_levels,
    interpolate,
    measure_sensitivity,
    measured_increase,
)

__all__ = ["Sensitivity", "SensitivityError", "check_levels", "interpolate", "load",
           "measure_sensitivity", "measured_increase", "save"]
