"""`python -m layerif.cli ...`, the same as the `layerif` command."""

import sys

from .main import main

sys.exit(main())
