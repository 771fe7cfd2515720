"""The `layerif` command: one module per subcommand, each thin over the Python API."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
