"""Zero-shot evaluation: multiple-choice accuracy through lm-evaluation-harness, generative
accuracy, perplexity; refusing data that shares content with what shaped the model."""

from .evaluate import DEFAULT_PPL, PRUNING_TASKS, evaluate_model, evaluation_specs
from .generation import evaluate_generation, generate_greedy
from .harness import evaluate_multiple_choice
from .perplexity import perplexity

__all__ = ["DEFAULT_PPL", "PRUNING_TASKS", "evaluate_generation", "evaluate_model",
           "evaluate_multiple_choice", "evaluation_specs", "generate_greedy", "perplexity"]
