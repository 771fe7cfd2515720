"""layerif: layer quality scores for LLMs from layer-wise influence functions (LayerIF).

    import layerif
    result = layerif.score_layers("smollm2-135m", "boolq:validation[0:64]",
                                  "boolq:validation[64:80]")
    result.scores        # one score per decoder block (aggregate "positive" by default)
    result.influence     # (n_train, n_layers) per-example block influences
    result.save("runs/x")
"""

__version__ = "0.1.0"

from .data import TASKS, Example, TaskSpec, load_examples  # noqa: E402
from .errors import (  # noqa: E402
    DataError,
    EstimatorError,
    LayerIFError,
    ModelError,
    NonFiniteGradientError,
    OutputError,
)
from .influence import (  # noqa: E402
    AGGREGATES,
    ESTIMATORS,
    InfluenceArguments,
    aggregate,
    spearman,
    spearman_per_layer,
)
from .models import BUILTIN_MODELS, discover_blocks, load_model, load_tokenizer  # noqa: E402
from .scoring import LayerScores, score_layers  # noqa: E402

__all__ = [
    "AGGREGATES",
    "BUILTIN_MODELS",
    "ESTIMATORS",
    "TASKS",
    "DataError",
    "EstimatorError",
    "Example",
    "InfluenceArguments",
    "LayerIFError",
    "LayerScores",
    "ModelError",
    "NonFiniteGradientError",
    "OutputError",
    "TaskSpec",
    "__version__",
    "aggregate",
    "discover_blocks",
    "load_examples",
    "load_model",
    "load_tokenizer",
    "score_layers",
    "spearman",
    "spearman_per_layer",
]
