"""`score_layers`: one quality score per decoder block from layer-wise influence functions.

Pipeline: examples -> tokens (data.encode) -> blocks and matrices (models.discover_blocks) ->
per-example gradients in batched passes (influence.engine) -> per-matrix influences (an
estimator) -> per-block influences IF_l(k) = sum of the block's matrices -> aggregates S_l.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .data import (
    Example,
    encode_examples,
    example_from_record,
    load_examples_as,
    make_batches,
)
from .data.encode import predicting_positions
from .data.provenance import ContentSet, check_disjoint, content_set
from .environment import machine_record
from .errors import DataError, NonFiniteGradientError, OutputError
from .fingerprint import model_fingerprint
from .influence import ESTIMATORS, InfluenceArguments, all_aggregates
from .influence.aggregate import DEFAULT_AGGREGATE, RENAMED, SIGN_CONVENTION, check_aggregate
from .influence.base import get_estimator
from .influence.checkpoint import StepCache
from .influence.distributed import DataParallel
from .influence.engine import CachedSource, GradientEngine, StreamingSource, cache_bytes
from .influence.stability import ProfileStability, profile_stability
from .io import atomic_dir, write_json, write_npy
from .memory import CACHE_PART, MemoryPlan, plan_scoring
from .models import (
    discover_blocks,
    load_model,
    load_skeleton,
    load_tokenizer,
    prepare_tokenizer,
)

log = logging.getLogger(__name__)

SCORES_FILE = "scores.json"
INFLUENCE_FILE = "influence.npy"


@dataclass
class LayerScores:
    """The result of `score_layers`; `save` writes scores.json and influence.npy atomically."""

    layerif_version: str
    model: str
    estimator: str
    params: str
    max_length: int
    seed: int
    n_train: int
    n_val: int
    layers: list[int]  # block indices, in order
    aggregate: str  # which aggregate `scores` holds
    scores: list[float]  # one per layer
    aggregates: dict[str, list[float]]  # every aggregate, one value per layer
    stability: dict  # bootstrap of the chosen aggregate (influence/stability.py)
    lambdas: dict[str, float]  # damping per matrix (empty for tracin)
    train: str
    val: str
    mode: str  # how training gradients were revisited: streaming | cached
    seconds: float
    influence: np.ndarray = field(repr=False)  # (n_train, n_layers) IF_block(k), input order
    data_format: str = "plain"  # how task specs read: lm-eval gold pairs or "instruct"
    sign_convention: str = SIGN_CONVENTION
    model_fingerprint: dict = field(default_factory=dict)  # see fingerprint.py
    zero_gradient_matrices: list[str] = field(default_factory=list)  # contribute 0
    provenance: list[dict] = field(default_factory=list)  # content sets of train and val
    device: str = "cpu"
    dtype: str = "float32"
    machine: dict = field(default_factory=dict)  # environment.machine_record ({}: not recorded)
    resumed_steps: list[str] = field(default_factory=list, repr=False)  # not saved

    @property
    def harmful_share(self) -> float:
        """The fraction of per-layer influences that are positive (harmful, DataInf's sign)."""
        return float((self.influence > 0).mean())

    @property
    def profile_stability(self) -> ProfileStability:
        """The saved bootstrap, or (for a file written before it was saved) one computed now
        from the influence matrix with the default settings."""
        if self.stability:
            return ProfileStability(**self.stability)
        return profile_stability(self.influence, self.aggregate, seed=self.seed)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("influence")
        d.pop("resumed_steps")
        return d

    def save(self, out_dir: str | Path) -> Path:
        """Write DIR/scores.json and DIR/influence.npy; the folder appears only when both are."""
        out_dir = Path(out_dir)
        with atomic_dir(out_dir, {SCORES_FILE, INFLUENCE_FILE}) as tmp:
            write_npy(tmp / INFLUENCE_FILE, self.influence)
            write_json(tmp / SCORES_FILE, self.to_dict())
        return out_dir

    @classmethod
    def load(cls, path: str | Path) -> LayerScores:
        """Read a folder written by `save` (or the path of its scores.json)."""
        path = Path(path)
        folder = path.parent if path.name == SCORES_FILE else path
        try:
            meta = json.loads((folder / SCORES_FILE).read_text())
        except FileNotFoundError:
            raise OutputError(
                f"{folder / SCORES_FILE}: no such file; write it with `layerif score`."
            ) from None
        except json.JSONDecodeError as exc:
            raise OutputError(f"{folder / SCORES_FILE}: not valid JSON ({exc}).") from exc
        influence_path = folder / INFLUENCE_FILE
        influence = np.load(influence_path) if influence_path.exists() else np.zeros((0, 0))
        return cls(**upgrade_scores_meta(meta), influence=influence)


def upgrade_scores_meta(meta: dict) -> dict:
    """A scores.json written before the aggregates were renamed, under the new names (the
    numbers are unchanged: 'positive' computed what 'harmful' does, and so on)."""
    if "aggregates" in meta:
        meta["aggregates"] = {RENAMED.get(k, k): v for k, v in meta["aggregates"].items()}
    if "aggregate" in meta:
        meta["aggregate"] = RENAMED.get(meta["aggregate"], meta["aggregate"])
    meta.setdefault("stability", {})
    return meta


def _as_examples(data, name: str, data_format: str
                 ) -> tuple[list[Example], str, ContentSet]:
    role = f"scoring {name}"
    if isinstance(data, (str, Path)):
        return load_examples_as(str(data), data_format), str(data), content_set(str(data), role)
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        examples = [
            d if isinstance(d, Example) else example_from_record(d, f"{name}[{i}]")
            for i, d in enumerate(data)
        ]
        if not examples:
            raise DataError(f"{name}: no examples given.")
        label = f"<{len(examples)} in-memory examples>"
        return examples, label, content_set(examples, role, label)
    raise DataError(f"{name}: expected a file path, a task spec or a list of examples.")


def score_layers(
    model,
    train,
    val,
    *,
    tokenizer=None,
    estimator: str = "datainf",
    params: str = "all",
    aggregate: str = DEFAULT_AGGREGATE,
    max_length: int = 256,
    batch_size: int = 8,
    mode: str = "auto",
    cache_gb: float | None = None,
    damping: float = 0.1,
    max_exact_dim: int = 8192,
    seed: int = 0,
    device: str | None = None,
    dtype: str = "float32",
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    data_format: str = "plain",
    bootstrap: int = 200,
) -> LayerScores:
    """Layer-wise influence scores of `model` for training data `train` on validation data `val`.

    model: a built-in name (`smollm2-135m`), .gguf file, model folder or hub id (loaded on
        `device` in `dtype`); or a loaded transformers causal LM together with `tokenizer`.
    train, val: a .jsonl/.json/.csv file, a task spec such as `boolq:validation[0:64]`, or a list
        of `Example`s / dicts with `text` or `prompt`+`completion`.
    data_format: how task specs read: "plain" (lm-eval's prompt and gold answer) or "instruct"
        (the fine-tuning format of data/instruct.py, for scores behind an expert allocation).
    checkpoint_dir: where finished steps are kept so that a killed run resumes (the same call
        again continues after the last finished step); removed when the run completes.
    bootstrap: resamples of the training examples behind `stability` (seeded by `seed`).
    Under torchrun (WORLD_SIZE > 1) the batches are shared out over the processes and every
    process returns the whole result (influence/distributed.py); write it from rank 0.
    Returns a `LayerScores` whose `influence` is (n_train, n_layers) and whose `scores` are the
    chosen aggregate (see influence/aggregate.py for the names and the sign).
    """
    start = time.perf_counter()
    args = InfluenceArguments(
        estimator=estimator,
        params=params,
        mode=mode,
        cache_gb=cache_gb,
        damping=damping,
        max_exact_dim=max_exact_dim,
        batch_size=batch_size,
        max_length=max_length,
    )
    aggregate = check_aggregate(aggregate)
    if bootstrap < 1:
        raise DataError(f"bootstrap needs at least 1 resample, got {bootstrap}.")
    torch.manual_seed(seed)
    parallel, device = DataParallel.from_environment(device)  # torchrun: this rank's part
    progress = progress and (parallel is None or parallel.is_main)
    run = _prepare(model, train, val, args, tokenizer=tokenizer, device=device, dtype=dtype,
                   data_format=data_format, parallel=parallel)
    if progress:
        print(run.plan.format(), file=sys.stderr)

    model, model_name = run.model, run.model_name
    if isinstance(model, str):  # the data was encoded with run.tokenizer already
        model, _ = load_model(model, device=device, dtype=dtype)
    fingerprint = model_fingerprint(model, model_name)
    blocks = [b for b in discover_blocks(model, args.params) if b.matrices]
    matrices = [m for b in blocks for m in b.matrices]
    fingerprint_of_run = _fingerprint(model_name, matrices, args, run.train_enc, run.val_enc)
    if parallel is not None:  # each rank keeps its own finished steps
        fingerprint_of_run.update(rank=parallel.rank, world_size=parallel.world_size)
        if checkpoint_dir is not None:
            checkpoint_dir = Path(checkpoint_dir) / f"rank-{parallel.rank}"
    steps = StepCache(checkpoint_dir, fingerprint_of_run, parallel)
    est = get_estimator(args, steps)

    engine = GradientEngine(model, matrices, progress=progress)
    source_cls = CachedSource if run.mode == "cached" else StreamingSource
    train_source = source_cls(engine, run.train_batches, "train", parallel, len(run.train_enc))
    val_source = StreamingSource(engine, run.val_batches, "val", parallel, len(run.val_enc))
    result = est.influence(matrices, train_source, val_source)

    # Block influence: sum over the block's matrices (columns are in `matrices` order).
    values = result.values.numpy()
    bounds = np.cumsum([0] + [len(b.matrices) for b in blocks])
    influence = np.stack(
        [values[:, bounds[i] : bounds[i + 1]].sum(axis=1) for i in range(len(blocks))], axis=1
    )
    _check_finite(influence, blocks, run.train_examples)
    aggregates = {k: v.tolist() for k, v in all_aggregates(influence).items()}
    steps.clear()
    if parallel is not None and checkpoint_dir is not None:
        parallel.barrier()  # every rank has removed its folder: remove theirs, now empty
        if parallel.is_main:
            shutil.rmtree(Path(checkpoint_dir).parent, ignore_errors=True)
    return LayerScores(
        layerif_version=__version__,
        model=model_name,
        estimator=args.estimator,
        params=args.params,
        max_length=args.max_length,
        seed=seed,
        n_train=len(run.train_examples),
        n_val=len(run.val_enc),
        layers=[b.index for b in blocks],
        aggregate=aggregate,
        scores=aggregates[aggregate],
        aggregates=aggregates,
        stability=profile_stability(influence, aggregate, bootstrap, seed).to_dict(),
        lambdas=result.lambdas,
        train=run.train_name,
        val=run.val_name,
        mode=run.mode,
        seconds=round(time.perf_counter() - start, 3),
        influence=influence,
        data_format=data_format,
        model_fingerprint=fingerprint,
        zero_gradient_matrices=result.zero_gradient,
        provenance=[run.train_set.to_dict(), run.val_set.to_dict()],
        device=str(engine.device),
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        machine=machine_record(),
        resumed_steps=list(steps.resumed),
    )


def plan_score_layers(model, train, val, *, tokenizer=None, estimator: str = "datainf",
                      params: str = "all", max_length: int = 256, batch_size: int = 8,
                      mode: str = "auto", cache_gb: float | None = None,
                      max_exact_dim: int = 8192, device: str | None = None,
                      dtype: str = "float32", data_format: str = "plain") -> MemoryPlan:
    """The memory plan `score_layers` with these arguments would print, without loading any
    weight or running any pass (`layerif score --dry-run`). Raises InsufficientMemoryError as
    the run would when it cannot fit."""
    args = InfluenceArguments(estimator=estimator, params=params, mode=mode, cache_gb=cache_gb,
                              max_exact_dim=max_exact_dim, batch_size=batch_size,
                              max_length=max_length)
    parallel, device = DataParallel.from_environment(device)
    return _prepare(model, train, val, args, tokenizer=tokenizer, device=device, dtype=dtype,
                    data_format=data_format, parallel=parallel).plan

@dataclass
class _Prepared:
    """A scoring run before its weights are loaded: the data encoded and batched (this rank's
    share), the memory plan, and the mode it chose."""

    model: object  # the name to load, or the loaded model given
    model_name: str
    tokenizer: object
    train_examples: list[Example]
    train_name: str
    val_name: str
    train_set: ContentSet
    val_set: ContentSet
    train_enc: list
    val_enc: list
    train_batches: list
    val_batches: list
    plan: MemoryPlan
    mode: str


def _prepare(model, train, val, args: InfluenceArguments, *, tokenizer, device, dtype,
             data_format, parallel) -> _Prepared:
    """Shapes from the model's config (no weight read), a first memory check before any data
    is read (weights and the estimator's state), the data, then the whole plan and the mode;
    an impossible run stops here with the options that would make it fit."""
    if isinstance(model, str):
        model_name = model
        skeleton = load_skeleton(model)
        tokenizer = load_tokenizer(model)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    else:
        if tokenizer is None:
            raise DataError("a loaded model needs its tokenizer: score_layers(model, ..., "
                            "tokenizer=tok).")
        model_name = getattr(model, "name_or_path", type(model).__name__)
        model.eval()
        skeleton = model
        device = str(next(model.parameters()).device)
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    tokenizer = prepare_tokenizer(tokenizer)
    est = get_estimator(args)
    matrices = [m for b in discover_blocks(skeleton, args.params) for m in b.matrices]
    est.check(matrices)

    def plan_for(a: InfluenceArguments, dt: str, n_train=None, batches=None, cache=0):
        ms = [m for b in discover_blocks(skeleton, a.params) for m in b.matrices]
        tokens = max((b.input_ids.shape[1] for b in batches), default=0) if batches else 0
        positions = tokens
        if batches:
            positions = max(len(predicting_positions(b.labels)) for b in batches)
        return plan_scoring(skeleton, ms, get_estimator(a), device=device, dtype=dt,
                            batch=a.batch_size, tokens=tokens or a.max_length,
                            logit_positions=positions or a.max_length, n_train=n_train,
                            cache=cache)

    _refuse_unless_fits(plan_for(args, dtype), args, dtype, plan_for)  # before any data

    train_examples, train_name, train_set = _as_examples(train, "train", data_format)
    val_examples, val_name, val_set = _as_examples(val, "val", data_format)
    # Influence of training data on itself is not what a layer score measures: refused as
    # every other overlap between the sets of one pipeline is.
    check_disjoint([val_set], [train_set])
    train_enc = encode_examples(train_examples, tokenizer, args.max_length)
    val_enc = encode_examples(val_examples, tokenizer, args.max_length)
    n_trunc = sum(e.truncated for e in train_enc + val_enc)
    if n_trunc:
        log.warning("%d of %d examples were longer than max_length=%d and were truncated",
                    n_trunc, len(train_enc) + len(val_enc), args.max_length)
    pad_id = tokenizer.pad_token_id
    train_batches = make_batches(train_enc, args.batch_size, pad_id)
    val_batches = make_batches(val_enc, args.batch_size, pad_id)
    if parallel is not None:
        train_batches = parallel.shard(train_batches, "--train")
        val_batches = parallel.shard(val_batches, "--val")
    n_train = len(train_enc)

    def full(a: InfluenceArguments, dt: str, mode: str):
        batches = train_batches if a.batch_size == args.batch_size else make_batches(
            train_enc, a.batch_size, pad_id)
        ms = [m for b in discover_blocks(skeleton, a.params) for m in b.matrices]
        cache = cache_bytes(ms, batches) if mode == "cached" else 0
        return plan_for(a, dt, n_train, batches, cache)

    chosen = _choose_mode(args, est, lambda mode: full(args, dtype, mode))
    plan = full(args, dtype, chosen)
    if chosen == "cached" and args.mode == "auto":
        plan.notes.append("auto: cached mode, the cache fits the free memory")
    elif chosen == "streaming" and args.mode == "auto" and est.train_visits > 1:
        plan.notes.append("auto: streaming mode, cached would not fit the free memory")
    _refuse_unless_fits(plan, args, dtype, lambda a, dt: full(a, dt, chosen if a.mode == "auto"
                                                             else a.mode))
    return _Prepared(model, model_name, tokenizer, train_examples, train_name, val_name,
                     train_set, val_set, train_enc, val_enc, train_batches, val_batches, plan,
                     chosen)


def _refuse_unless_fits(plan: MemoryPlan, args: InfluenceArguments, dtype: str, plan_for
                        ) -> None:
    """Stop a run whose plan does not fit, naming the changes that would make it fit."""
    if plan.fits:
        return
    from dataclasses import replace

    options = []
    for b in dict.fromkeys((args.batch_size // 2, args.batch_size // 4, 1)):  # no repeats
        if 0 < b < args.batch_size:
            options.append((f"--batch-size {b}", replace(args, batch_size=b)))
    if args.mode != "streaming":
        options.append(("--mode streaming", replace(args, mode="streaming")))
    if args.params == "all":
        options += [("--params attn", replace(args, params="attn")),
                    ("--params mlp", replace(args, params="mlp"))]
    alternatives = [(label, plan_for(changed, dtype)) for label, changed in options]
    if dtype == "float32":
        alternatives.append(("--dtype bfloat16", plan_for(args, "bfloat16")))
    plan.refuse(alternatives)


def _check_finite(influence: np.ndarray, blocks, examples: list[Example]) -> None:
    """Non-finite influences are an error naming layers and examples, never a saved NaN."""
    bad = ~np.isfinite(influence)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise NonFiniteGradientError(
            f"non-finite influence at layer(s) {sorted({blocks[c].index for c in cols})[:8]} for "
            f"{', '.join(examples[r].origin for r in sorted(set(rows))[:5])}; check these "
            "examples and the model's dtype (fp32 is the safe choice)."
        )


def _choose_mode(args: InfluenceArguments, est, plan_in) -> str:
    """streaming for one-visit estimators (a cache would only cost memory), the mode asked
    for, or for auto: cached when the run's plan with the cache (`plan_in("cached")`) fits the
    free memory, and its cache the --cache-gb budget when one is given."""
    if est.train_visits == 1:
        return "streaming"
    if args.mode != "auto":
        return args.mode
    plan = plan_in("cached")
    cache = plan.parts.get(CACHE_PART, 0)
    fits = plan.fits if args.cache_gb is None else cache <= args.cache_gb * 2**30
    log.info("cached mode needs %.2f GiB of cache (run %.2f GiB, %s free): %s", cache / 2**30,
             plan.total / 2**30, "?" if plan.available is None else
             f"{plan.available / 2**30:.2f} GiB", "cached" if fits else "streaming")
    return "cached" if fits else "streaming"


def _fingerprint(model_name, matrices, args, train_enc, val_enc) -> dict:
    """What a resumed run must share with the run that saved the steps."""
    data = hashlib.sha256()
    for e in train_enc + [None] + val_enc:
        data.update(b"|" if e is None else json.dumps([e.input_ids, e.labels]).encode())
    weights = [float(m.weight.detach().double().sum()) for m in matrices]
    return {
        "layerif_version": __version__,
        "model": model_name,
        "matrices": [m.name for m in matrices],
        "weights_checksum": hashlib.sha256(json.dumps(weights).encode()).hexdigest(),
        "arguments": asdict(args),
        "data": data.hexdigest(),
    }


__all__ = ["ESTIMATORS", "LayerScores", "plan_score_layers", "score_layers"]
