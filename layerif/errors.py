"""Errors layerif raises for bad input: each says what, where (file, line) and how to fix it."""

from __future__ import annotations


class LayerIFError(Exception):
    """Base class: the CLI prints these as `error: ...` without a traceback."""


class DataError(LayerIFError, ValueError):
    """A data file or task spec cannot be read, or an example cannot be scored."""


class ModelError(LayerIFError, ValueError):
    """A model cannot be loaded, or no decoder blocks were found in it."""


class EstimatorError(LayerIFError, ValueError):
    """An estimator cannot run on this input (unknown name, matrix too large, bad option)."""


class NonFiniteGradientError(LayerIFError, FloatingPointError):
    """A loss or gradient became NaN/inf; names the examples that caused it."""


class OutputError(LayerIFError, OSError):
    """An output location cannot be written without destroying something that is not ours."""
