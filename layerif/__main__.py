"""`python -m layerif ...` (and `torchrun --nproc_per_node N -m layerif score ...`), the same as
the `layerif` command."""

import sys

from .cli.main import main

sys.exit(main())
