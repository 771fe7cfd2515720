"""layerif: layer quality scores for LLMs from layer-wise influence functions (LayerIF).

    import layerif
    result = layerif.score_layers("smollm2-135m", "boolq:validation[0:64]",
                                  "boolq:validation[64:80]")
    result.scores        # one score per decoder block (aggregate "helpful" by default)
    result.influence     # (n_train, n_layers) per-example block influences
    result.save("runs/x")

The names below are imported on first use (PEP 562), so that `import layerif` and the CLI's
`--help` and argument checks do not wait seconds for torch, transformers and scipy.
"""

from __future__ import annotations

import os

from .lazy import lazy_exports

__version__ = "0.1.0"

# Large CPU tensors (a pass's activations, cached gradients: GBs each touched once) on
# transparent huge pages: fewer page faults, ~10% faster cached scoring and ~20% less resident
# memory on SmolLM2 (bench/bench_peers.py). torch's CPU allocator reads this when torch is
# first imported, so it takes effect where layerif is imported first (the CLI always is);
# THP_MEM_ALLOC_ENABLE=0 turns it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

# Public name -> the submodule that defines it.
_EXPORTS = {
    # The downstream applications (allocation, pruning, evaluation, LoRA-MoE).
    "allocate_experts": "allocation.api",
    "allocate_ranks": "allocation.api",
    "allocate_sparsity": "allocation.api",
    "TASKS": "data",
    "Example": "data",
    "TaskSpec": "data",
    "load_examples": "data",
    "load_instruct": "data",
    "DataError": "errors",
    "EstimatorError": "errors",
    "LayerIFError": "errors",
    "ModelError": "errors",
    "NonFiniteGradientError": "errors",
    "OutputError": "errors",
    "evaluate_generation": "evaluation",
    "evaluate_model": "evaluation",
    "evaluation_specs": "evaluation",
    "AGGREGATES": "influence",
    "ESTIMATORS": "influence",
    "InfluenceArguments": "influence",
    "aggregate": "influence",
    "spearman": "influence",
    "spearman_per_layer": "influence",
    "finetune_lora": "lora",
    "lora_config": "lora",
    "BUILTIN_MODELS": "models",
    "discover_blocks": "models",
    "load_model": "models",
    "load_tokenizer": "models",
    "MoEConfig": "moe",
    "apply_lora_moe": "moe",
    "load_adapters": "moe",
    "save_adapters": "moe",
    "FinetuneArguments": "moe.train",
    "finetune_moe": "moe.train",
    "prune_model": "pruning",
    "LayerScores": "scoring",
    "score_layers": "scoring",
}

__all__ = sorted([*_EXPORTS, "__version__"])


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
