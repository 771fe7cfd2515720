"""LayerIF's direction and strength: epsilon in [-1, 1] (0 is uniform, negative is the map of the
reversed scores), chosen on calibration data (--tune), and as a correction of ATP (--prior)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import build_tiny_model

from layerif.allocation import AllocationError, make_sparsity_method
from layerif.allocation.api import allocate_sparsity
from layerif.allocation.sparsity import minmax, scale_to_target, smooth
from layerif.allocation.sparsity_methods.atp import atp_sparsity
from layerif.allocation.sparsity_methods.layerif import layerif_sparsity
from layerif.data.calibration import calibration_samples
from layerif.pruning.prune import prune_model

SCORES = [-3.0, -7.0, -1.0, -9.0, -4.0, -2.0, -8.0, -5.0]
P = [10, 10, 10, 10, 12, 12, 12, 12]


def test_epsilon_zero_is_uniform():
    np.testing.assert_allclose(layerif_sparsity(SCORES, 0.6, P, 0.0), 0.6, atol=1e-15)


@pytest.mark.parametrize("eps", [0.1, 0.3, 1.0])
def test_negative_epsilon_is_the_map_of_the_reversed_scores(eps):
    reversed_scores = [-(10.0 - abs(s)) for s in SCORES]  # |S| reversed: 10 - |S|
    np.testing.assert_allclose(layerif_sparsity(SCORES, 0.6, P, -eps),
                               layerif_sparsity(reversed_scores, 0.6, P, eps), atol=1e-12)
    forward = layerif_sparsity(SCORES, 0.6, P, eps)
    backward = layerif_sparsity(SCORES, 0.6, P, -eps)
    assert np.argmax(forward) == np.argmin(backward)  # the largest |S| flips from most to least


def test_epsilon_outside_minus_one_one_is_refused():
    for bad in (1.5, -1.01, float("inf"), float("nan")):
        with pytest.raises(AllocationError, match="--epsilon"):
            make_sparsity_method("layerif", epsilon=bad)
    with pytest.raises(AllocationError, match="--tune-grid"):
        make_sparsity_method("layerif", tune=True, grid="0,2")
    with pytest.raises(AllocationError, match="--prior"):
        make_sparsity_method("layerif", prior="dlp")
    assert make_sparsity_method("layerif").requires() == ("scores",)
    assert set(make_sparsity_method("layerif", tune=True).requires()) == {
        "scores", "weights", "calibration"}


def _scores(L: int) -> dict:
    values = [-(1 + 0.7 * i + (i % 3)) for i in range(L)]
    return {"scores": values, "layers": list(range(L)), "aggregate": "helpful",
            "aggregates": {"helpful": values}, "_path": "in-memory", "provenance": []}


def _held_perplexity(model, ratios, prune_on, held):
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    prune_model(model, ratios, "wanda", prune_on, progress=False)
    with torch.no_grad():
        nll = [torch.nn.functional.cross_entropy(model(w[None]).logits[0, :-1], w[1:],
                                                 reduction="sum") for w in held]
    model.load_state_dict(dense)
    return float(torch.exp(torch.stack(nll).sum() / (len(held) * (len(held[0]) - 1))))


def test_tune_picks_the_lowest_held_perplexity(tokenizer, calib):
    torch.manual_seed(0)
    model = build_tiny_model("llama", len(tokenizer), layers=4).eval()
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    samples = calibration_samples(tokenizer, calib, 10, 16, 0)
    alloc = allocate_sparsity("layerif", 0.6, model=model, calibration=samples,
                              scores=_scores(4), tune=True, grid="-0.5,0,0.5", nsamples=4,
                              held=3)
    for k, v in model.state_dict().items():
        assert torch.equal(v, dense[k]), k
    p = alloc.parameters
    assert p["tuned"] and p["search"]["grid"] == [-0.5, 0.0, 0.5]
    direct = [_held_perplexity(model, layerif_sparsity(_scores(4)["scores"], 0.6,
                                                       alloc.params_per_layer, e),
                               samples[:4], samples[-3:]) for e in (-0.5, 0.0, 0.5)]
    np.testing.assert_allclose(p["search"]["held_perplexity"], direct, rtol=1e-5)
    assert p["epsilon"] == [-0.5, 0.0, 0.5][int(np.argmin(direct))]
    assert alloc.global_sparsity == pytest.approx(0.6, abs=1e-12)


def test_prior_atp_corrects_atps_progression(tokenizer, calib):
    torch.manual_seed(0)
    model = build_tiny_model("llama", len(tokenizer), layers=4).eval()
    samples = calibration_samples(tokenizer, calib, 10, 16, 0)
    alloc = allocate_sparsity("layerif", 0.6, model=model, calibration=samples,
                              scores=_scores(4), prior="atp", epsilon=0.3, nsamples=4, held=3)
    p = alloc.parameters
    beta = p["atp"]["beta"]
    assert len(p["atp"]["grid"]) == 6  # ATP's own search ran first, on the same windows
    atp = atp_sparsity(0.6, alloc.params_per_layer, beta)
    x = minmax(smooth(minmax(np.abs(_scores(4)["scores"]))))
    want = scale_to_target(atp * (0.7 + 0.6 * x), 0.6, alloc.params_per_layer)
    np.testing.assert_allclose(alloc.ratios, want, atol=1e-12)
    assert alloc.global_sparsity == pytest.approx(0.6, abs=1e-12)
    # epsilon 0 on top of the prior is ATP itself
    same = allocate_sparsity("layerif", 0.6, model=model, calibration=samples,
                             scores=_scores(4), prior="atp", epsilon=0.0, nsamples=4, held=3)
    assert same.ratios == atp.tolist()  # bit for bit: the pruned model is ATP's own


def test_a_given_atp_beta_skips_the_search_and_equals_it(tokenizer, calib):
    torch.manual_seed(0)
    model = build_tiny_model("llama", len(tokenizer), layers=4).eval()
    samples = calibration_samples(tokenizer, calib, 10, 16, 0)
    searched = allocate_sparsity("layerif", 0.6, model=model, calibration=samples,
                                 scores=_scores(4), prior="atp", epsilon=0.3, nsamples=4, held=3)
    beta = searched.parameters["atp"]["beta"]
    given = allocate_sparsity("layerif", 0.6, model=model, scores=_scores(4), prior="atp",
                              epsilon=0.3, atp_beta=beta)
    np.testing.assert_allclose(given.ratios, searched.ratios, atol=1e-15)
    assert make_sparsity_method("layerif", prior="atp", atp_beta=beta).requires() == ("scores",)
    with pytest.raises(AllocationError, match="--prior-atp-beta"):
        make_sparsity_method("layerif", atp_beta=0.01)


def test_the_runner_hands_atps_beta_to_layerif_with_the_same_search():
    from layerif.experiments.config import ExperimentConfig, MethodSpec
    from layerif.experiments.pruning import _with_atp_beta

    prior = MethodSpec("layerif", {"prior": "atp", "epsilon": 0.2}, "helpful", "prior")
    config = ExperimentConfig("x", "m", [MethodSpec("atp", {}), prior], [], [0.7])
    assert _with_atp_beta(prior, config, 0.004).options["atp_beta"] == 0.004
    assert _with_atp_beta(prior, config, None) is prior
    other = ExperimentConfig("x", "m", [MethodSpec("atp", {"held": 4}), prior], [], [0.7])
    assert _with_atp_beta(prior, other, 0.004) is prior  # another search: not the same beta


def test_a_search_repeats_no_trial_of_an_earlier_one_and_a_changed_model_repeats_none(
        tokenizer, calib):
    from layerif.allocation.sparsity_methods import setting_search as search

    torch.manual_seed(0)
    model = build_tiny_model("llama", len(tokenizer), layers=4).eval()
    samples = calibration_samples(tokenizer, calib, 10, 16, 0)
    search._TRIALS.clear()
    atp = allocate_sparsity("atp", 0.6, model=model, calibration=samples, nsamples=4, held=3)
    assert atp.parameters["repeated_trials"] == 0
    beta = atp.parameters["beta"]
    # --prior atp's epsilon 0 is ATP's chosen progression; epsilon 0 of --tune is ATP's beta 0
    prior = allocate_sparsity("layerif", 0.6, model=model, calibration=samples, prior="atp",
                              atp_beta=beta, scores=_scores(4), tune=True, grid="0,0.5",
                              nsamples=4, held=3).parameters["search"]
    tuned = allocate_sparsity("layerif", 0.6, model=model, calibration=samples,
                              scores=_scores(4), tune=True, grid="-0.5,0", nsamples=4,
                              held=3).parameters["search"]
    assert prior["repeated_trials"] == 1 and tuned["repeated_trials"] == 1
    at = atp.parameters["grid"].index(beta)
    assert prior["held_perplexity"][0] == atp.parameters["held_perplexity"][at]
    assert tuned["held_perplexity"][1] == atp.parameters["held_perplexity"][0]  # beta 0
    # the looked-up value is what the trial computes (bit for bit on this CPU run)
    search._TRIALS.clear()
    fresh = allocate_sparsity("layerif", 0.6, model=model, calibration=samples,
                              scores=_scores(4), tune=True, grid="-0.5,0", nsamples=4,
                              held=3).parameters["search"]
    assert fresh["repeated_trials"] == 0 and fresh["held_perplexity"] == tuned["held_perplexity"]
    # another model (one weight changed) shares no trial
    with torch.no_grad():
        model.lm_head.weight[0, 0] += 1.0
    other = allocate_sparsity("layerif", 0.6, model=model, calibration=samples,
                              scores=_scores(4), tune=True, grid="-0.5,0", nsamples=4,
                              held=3).parameters["search"]
    assert other["repeated_trials"] == 0


def test_a_search_killed_mid_way_resumes_at_its_next_trial_from_the_kept_trials(
        tokenizer, calib, tmp_path, monkeypatch):
    """Inside `kept_trials`, each finished trial is a file: a search killed at its third trial
    run again in a fresh process (memo cleared) runs only the trials not kept, and chooses from
    the same perplexities, bit for bit, as a search never interrupted. An unreadable kept trial
    is run again, not read; outside `kept_trials` nothing is written."""
    from layerif.allocation.sparsity_methods import setting_search as search

    torch.manual_seed(0)
    model = build_tiny_model("llama", len(tokenizer), layers=4).eval()
    samples = calibration_samples(tokenizer, calib, 10, 16, 0)
    kept = tmp_path / "trials"

    def atp():
        return allocate_sparsity("atp", 0.6, model=model, calibration=samples, nsamples=4,
                                 held=3, grid="0,0.3,0.6,1")

    search._TRIALS.clear()
    whole = atp()
    assert not kept.exists() and whole.parameters["repeated_trials"] == 0
    trial, ran = search.held_perplexity, []

    def killed_at_the_third(*args):
        if len(ran) == 2:
            raise KeyboardInterrupt
        ran.append(args)
        return trial(*args)

    search._TRIALS.clear()
    monkeypatch.setattr(search, "held_perplexity", killed_at_the_third)
    with pytest.raises(KeyboardInterrupt), search.kept_trials(kept):
        atp()
    assert len(list(kept.glob("*.json"))) == 2 and not list(kept.glob(".*"))
    monkeypatch.setattr(search, "held_perplexity", trial)
    search._TRIALS.clear()  # a new process
    with search.kept_trials(kept):
        resumed = atp()
    assert resumed.parameters["repeated_trials"] == 2
    assert resumed.parameters["held_perplexity"] == whole.parameters["held_perplexity"]
    assert resumed.parameters["beta"] == whole.parameters["beta"]
    np.testing.assert_array_equal(resumed.ratios, whole.ratios)
    sorted(kept.glob("*.json"))[0].write_text("{")  # a damaged file: the trial is run again
    search._TRIALS.clear()
    with search.kept_trials(kept):
        again = atp()
    assert again.parameters["repeated_trials"] == 3
    assert again.parameters["held_perplexity"] == whole.parameters["held_perplexity"]
