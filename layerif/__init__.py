"""layerif: layer quality scores for LLMs from layer-wise influence functions (LayerIF).

    import layerif
    result = layerif.score_layers("smollm2-135m", "boolq:validation[0:64]",
                                  "boolq:validation[64:80]")
    result.scores        # one score per decoder block (aggregate "helpful" by default)
    result.influence     # (n_train, n_layers) per-example block influences
    result.save("runs/x")
"""

__version__ = "0.1.0"

import os  # noqa: E402

# Large CPU tensors (a pass's activations, cached gradients: GBs each touched once) on
# transparent huge pages: fewer page faults, ~10% faster cached scoring and ~20% less resident
# memory on SmolLM2 (bench/bench_peers.py). torch's CPU allocator reads this when torch is
# first imported, so it takes effect where layerif is imported first (the CLI always is);
# THP_MEM_ALLOC_ENABLE=0 turns it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

# The downstream applications (allocation, pruning, evaluation, LoRA-MoE).
from .allocation.api import allocate_experts, allocate_ranks, allocate_sparsity  # noqa: E402
from .data import TASKS, Example, TaskSpec, load_examples, load_instruct  # noqa: E402
from .errors import (  # noqa: E402
    DataError,
    EstimatorError,
    LayerIFError,
    ModelError,
    NonFiniteGradientError,
    OutputError,
)
from .evaluation import evaluate_generation, evaluate_model, evaluation_specs  # noqa: E402
from .influence import (  # noqa: E402
    AGGREGATES,
    ESTIMATORS,
    InfluenceArguments,
    aggregate,
    spearman,
    spearman_per_layer,
)
from .lora import finetune_lora, lora_config  # noqa: E402
from .models import BUILTIN_MODELS, discover_blocks, load_model, load_tokenizer  # noqa: E402
from .moe import MoEConfig, apply_lora_moe, load_adapters, save_adapters  # noqa: E402
from .moe.train import FinetuneArguments, finetune_moe  # noqa: E402
from .pruning import prune_model  # noqa: E402
from .scoring import LayerScores, score_layers  # noqa: E402

__all__ = [
    "AGGREGATES",
    "BUILTIN_MODELS",
    "ESTIMATORS",
    "TASKS",
    "DataError",
    "EstimatorError",
    "Example",
    "FinetuneArguments",
    "InfluenceArguments",
    "LayerIFError",
    "LayerScores",
    "ModelError",
    "MoEConfig",
    "NonFiniteGradientError",
    "OutputError",
    "TaskSpec",
    "__version__",
    "aggregate",
    "allocate_experts",
    "allocate_ranks",
    "allocate_sparsity",
    "apply_lora_moe",
    "discover_blocks",
    "evaluate_generation",
    "evaluate_model",
    "evaluation_specs",
    "finetune_lora",
    "finetune_moe",
    "load_adapters",
    "load_examples",
    "load_instruct",
    "load_model",
    "load_tokenizer",
    "lora_config",
    "prune_model",
    "save_adapters",
    "score_layers",
    "spearman",
    "spearman_per_layer",
]
