"""Evaluation: lm-evaluation-harness through our generated task configs must give the accuracy a
brute-force log-likelihood scorer gives; perplexity by hand; overlapping slices are refused."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from layerif.data import TaskSpec, get_task, load_rows
from layerif.errors import DataError
from layerif.evaluation import evaluate_model, evaluation_specs, perplexity


def loglik(model, tokenizer, context: str, continuation: str) -> float:
    """sum log p(continuation | context), split as lm-eval does (encode the whole, then cut)."""
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    n_ctx = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0].float(), -1)
    return sum(float(logp[j - 1, whole[j]]) for j in range(n_ctx, len(whole)))


def brute_force_accuracy(model, tokenizer, spec: TaskSpec) -> tuple[list, list]:
    """Per item, in row order: (correct by log-likelihood, correct by length-normalised)."""
    task = get_task(spec.task)
    rows = load_rows(spec)
    idx = spec.indices(len(rows))
    acc, acc_norm = [], []
    for r in rows.select(idx):
        item = task.multiple_choice(r, "x")
        ll = np.array([loglik(model, tokenizer, c, k)
                       for c, k in zip(item.contexts, item.continuations, strict=True)])
        acc.append(int(np.argmax(ll)) == item.gold)
        lengths = np.array([len(k) - 1 for k in item.continuations])  # without the space
        acc_norm.append(int(np.argmax(ll / lengths)) == item.gold)
    return acc, acc_norm


@pytest.fixture(scope="module")
def results(tiny_models, tokenizer):
    model = tiny_models("llama")
    specs = [TaskSpec.parse("arc_easy:validation[0:12]"),
             TaskSpec.parse("winogrande:validation[0:12]")]
    return model, specs, evaluate_model(model, tokenizer, specs, ppl=None, batch_size=4)


def test_lm_eval_matches_brute_force(results, tokenizer):
    model, specs, out = results
    for spec in specs:
        items, items_norm = brute_force_accuracy(model, tokenizer, spec)
        acc, acc_norm = float(np.mean(items)), float(np.mean(items_norm))
        got = out["tasks"][spec.task]
        assert got["per_item"]["acc"] == [float(x) for x in items], spec.task
        assert got["n"] == 12 and got["slice"] == str(spec)
        assert got["acc"] == pytest.approx(acc), spec.task
        if spec.task == "arc_easy":  # (lm-eval normalises multiple-input items by context)
            assert got["acc_norm"] == pytest.approx(acc_norm)
        assert got["acc_stderr"] == pytest.approx(math.sqrt(acc * (1 - acc) / 11))
    assert out["mean"]["acc"] == pytest.approx(
        np.mean([out["tasks"][s.task]["acc"] for s in specs]))


def test_perplexity_by_hand(tiny_models, tokenizer):
    """Non-overlapping windows of seqlen tokens, the last partial one dropped, each scored on
    its own (the literature's windowing)."""
    model = tiny_models("qwen2")
    text = "The quick brown fox jumps over the lazy dog. " * 6
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    got = perplexity(model, tokenizer, text, seqlen=16)
    windows = [ids[s : s + 16] for s in range(0, len(ids) - 15, 16)]
    nll = [_nll(model, w) for w in windows]
    assert got["windows"] == len(ids) // 16 == len(windows)
    assert got["dropped_tokens"] == len(ids) % 16 and got["tokens"] == 15 * len(windows)
    np.testing.assert_allclose(got["window_nll"], nll, rtol=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(sum(nll) / (15 * len(windows))),
                                              rel=1e-5)
    assert perplexity(model, tokenizer, text, 16, max_windows=2)["windows"] == 2
    with pytest.raises(DataError, match="fewer than one window of 512"):
        perplexity(model, tokenizer, text, seqlen=512)


def _nll(model, window):
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([window])).logits[0].float(), -1)
    return -sum(float(logp[j - 1, window[j]]) for j in range(1, len(window)))


def test_default_slices_are_the_end_of_each_split():
    (spec,) = evaluation_specs(["rte"], limit=50)
    assert (spec.start, spec.stop) == (227, 277)
    (spec,) = evaluation_specs(["rte"], rows="10:20")
    assert (spec.start, spec.stop) == (10, 20)


def test_overlapping_slices_are_refused(tmp_path, tiny_models, tokenizer):
    """Files from before provenance was embedded name their data: the sets are rebuilt."""
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"train": "rte:validation[0:100]",
                                  "val": "rte:validation[100:120]", "scores": [], "layers": []}))
    model = tiny_models("llama")
    with pytest.raises(DataError, match=r"shares content with the scoring val set "
                       r"rte:validation\[100:120\] .*: 10 of its 20 examples"):
        evaluate_model(model, tokenizer, [TaskSpec.parse("rte:validation[110:130]")], ppl=None,
                       check_against=[str(scores)])
    pruned = tmp_path / "pruned"
    pruned.mkdir()
    (pruned / "pruning.json").write_text(json.dumps({
        "calibration": {"source": "sciq:validation[0:100]"},
        "allocation": {"parameters": {"scores": str(scores)}}}))
    with pytest.raises(DataError, match="shares content with the calibration set"):
        evaluate_model(model, tokenizer, [TaskSpec.parse("sciq:validation[90:95]")],
                       model_name=str(pruned), ppl=None)
    with pytest.raises(DataError, match="shares content with the scoring train"):
        evaluate_model(model, tokenizer, [TaskSpec.parse("rte:validation[50:60]")],
                       model_name=str(pruned), ppl=None)


def test_a_shared_passage_in_another_row_is_refused(tmp_path, tiny_models, tokenizer):
    """BoolQ rows 39 and 126 ask different questions about one passage: row ranges that do not
    overlap still leak it."""
    rows = load_rows(TaskSpec("boolq"))
    assert rows[39]["passage"] == rows[126]["passage"] and rows[39]["question"] != rows[126][
        "question"]
    pruned = tmp_path / "pruned"
    pruned.mkdir()
    (pruned / "pruning.json").write_text(json.dumps({
        "calibration": {"source": "boolq:validation[100:130]"}}))
    with pytest.raises(DataError, match=r"boolq:validation\[39\] = boolq:validation\[126\]"):
        evaluate_model(tiny_models("llama"), tokenizer, [TaskSpec.parse("boolq:validation[30:50]")],
                       model_name=str(pruned), ppl=None)


@pytest.mark.parametrize("record", ["passage", "pair", "prompt"])
def test_a_file_holding_an_evaluation_example_is_refused(record, tmp_path, tiny_models, tokenizer):
    task = get_task("boolq")
    row = load_rows(TaskSpec("boolq"))[7]
    example = task.example(row, "x")
    text = {"passage": {"text": "  " + row["passage"].upper() + "\n"},  # case and spaces fold
            "pair": {"text": example.prompt + example.completion},
            "prompt": {"prompt": example.prompt, "completion": " maybe"}}[record]
    data = tmp_path / "calib.jsonl"
    data.write_text(json.dumps({"text": "An unrelated sentence."}) + "\n" + json.dumps(text) + "\n")
    pruned = tmp_path / "pruned"
    pruned.mkdir()
    (pruned / "pruning.json").write_text(json.dumps({"calibration": {"source": str(data)}}))
    with pytest.raises(DataError, match=rf"boolq:validation\[7\] = {data}:2"):
        evaluate_model(tiny_models("llama"), tokenizer, [TaskSpec.parse("boolq:validation[0:10]")],
                       model_name=str(pruned), ppl=None)
    with pytest.raises(DataError, match=rf"perplexity set {data} shares content"):  # ppl too
        scores = _scores_of(tmp_path, "boolq:validation[0:10]")
        evaluate_model(tiny_models("llama"), tokenizer, [TaskSpec.parse("rte:validation[0:2]")],
                       ppl=str(data), check_against=[str(scores)])


def _scores_of(tmp_path, train: str):
    path = tmp_path / "s" / "scores.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"train": train, "val": "rte:validation[200:210]", "scores": [],
                                "layers": []}))
    return path


def test_a_missing_recorded_file_is_an_error(tmp_path, tiny_models, tokenizer):
    pruned = tmp_path / "pruned"
    pruned.mkdir()
    (pruned / "pruning.json").write_text(json.dumps({
        "allocation": {"parameters": {"scores": str(tmp_path / "gone" / "scores.json")}}}))
    spec = [TaskSpec.parse("rte:validation[0:4]")]
    with pytest.raises(DataError, match=r"gone/scores.json, which does not exist; restore it"):
        evaluate_model(tiny_models("llama"), tokenizer, spec, model_name=str(pruned), ppl=None)
    with pytest.raises(DataError, match="missing.json, which does not exist"):
        evaluate_model(tiny_models("llama"), tokenizer, spec, ppl=None,
                       check_against=[str(tmp_path / "missing.json")])


def test_the_defaults_are_disjoint_by_content():
    """Default calibration and perplexity text, the evaluation defaults (the last 200 rows of
    every task) and the README pipeline's scoring slices share no content. (BoolQ's first rows
    would not do: rows 9, 35 and 46 share passages with the last 200.)"""
    from layerif.data import TASKS
    from layerif.data.calibration import DEFAULT_CALIBRATION, DEFAULT_PERPLEXITY
    from layerif.data.provenance import check_disjoint, content_set

    recorded = [content_set("boolq:validation[256:320]", "scoring train"),
                content_set("boolq:validation[320:336]", "scoring val"),
                content_set("mrpc:validation[64:80]", "scoring val"),
                content_set(DEFAULT_CALIBRATION, "calibration")]
    new = [content_set(str(s), "evaluation") for s in evaluation_specs(sorted(TASKS))]
    new.append(content_set(DEFAULT_PERPLEXITY, "perplexity"))
    check_disjoint(new, recorded)  # raises on any shared content
    with pytest.raises(DataError):  # while the old defaults shared BoolQ passages
        check_disjoint([content_set("boolq:validation[3070:3270]", "evaluation")],
                       [content_set("boolq:validation[1000:2000]", "calibration")])
