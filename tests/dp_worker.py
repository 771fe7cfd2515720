"""One rank of a data-parallel test run (tests/test_distributed.py starts N of these with
RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set, as torchrun would).

    python tests/dp_worker.py MODEL_DIR OUT CASES_JSON [--die-after STEP]

For each case {name, train, val, estimator, mode}: score_layers with a checkpoint folder under
OUT/NAME.resume; rank 0 saves OUT/NAME/influence.npy. --die-after STEP: rank 1 exits hard right
after saving STEP of the first case (a killed rank), leaving its finished steps behind.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    model, out, cases = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    die_after = sys.argv[5] if len(sys.argv) > 5 and sys.argv[4] == "--die-after" else None
    import torch.distributed as dist

    from layerif.influence import checkpoint
    from layerif.scoring import score_layers

    rank = int(os.environ["RANK"])
    if die_after and rank == 1:
        original = checkpoint.StepCache.__call__

        def dying(self, step, compute):
            value = original(self, step, compute)
            if step == die_after:
                os._exit(3)
            return value

        checkpoint.StepCache.__call__ = dying
    for case in cases:
        result = score_layers(model, case["train"], case["val"], estimator=case["estimator"],
                              mode=case["mode"], max_length=48, batch_size=4, progress=False,
                              checkpoint_dir=out / f"{case['name']}.resume", bootstrap=10)
        if rank == 0:
            (out / case["name"]).mkdir(parents=True, exist_ok=True)
            np.save(out / case["name"] / "influence.npy", result.influence)
            (out / case["name"] / "resumed.json").write_text(json.dumps(result.resumed_steps))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
