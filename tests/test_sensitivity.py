"""Measured per-block sensitivity against a brute-force recomputation, the weights restored bit
for bit, held windows that overlap the calibration refused, and the `sensitivity` allocation
against an exhaustive search."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from conftest import build_tiny_model

from layerif.allocation import AllocationError
from layerif.allocation.sparsity_methods.sensitivity import additive_allocation
from layerif.data.calibration import calibration_samples
from layerif.environment import describe_machine, machine_record
from layerif.models import discover_blocks
from layerif.pruning.prune import InputStatistics, oriented_weight, prune_matrix
from layerif.sensitivity import interpolate, measure_sensitivity, measured_increase
from layerif.sensitivity.measure import dense_nll

# --- the allocation ----------------------------------------------------------------------


def _convex_curves(rng, L):
    """D_l(s) = a_l s^p_l (+ a kink), convex and increasing, different per block."""
    a = rng.uniform(0.2, 3.0, L)
    p = rng.uniform(1.5, 4.0, L)
    return [lambda s, a=a[i], p=p[i]: float(a * s ** p) for i in range(L)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_additive_allocation_equals_exhaustive_search(seed):
    rng = np.random.default_rng(seed)
    curves = _convex_curves(rng, 3)
    step, cap, target = 0.1, 0.9, 0.5
    ratios, predicted = additive_allocation(curves, target, [1, 1, 1], step=step, cap=cap)
    grid = np.round(np.arange(0, 10) * step, 10)
    best = min((sum(c(float(s)) for c, s in zip(curves, combo, strict=True)), combo)
               for combo in itertools.product(grid, repeat=3)
               if abs(sum(combo) - 3 * target) < 1e-9)
    assert predicted == pytest.approx(best[0], abs=1e-12)
    np.testing.assert_allclose(sorted(ratios), sorted(best[1]), atol=1e-12)
    assert np.mean(ratios) == pytest.approx(target, abs=1e-12)


def test_additive_allocation_keeps_the_target_for_unequal_blocks():
    rng = np.random.default_rng(5)
    curves = _convex_curves(rng, 6)
    P = np.array([1.0, 2.0, 3.0, 1.5, 2.5, 4.0])
    for target in (0.3, 0.55, 0.7):
        ratios, _ = additive_allocation(curves, target, P, step=0.01)
        assert (P * ratios).sum() / P.sum() == pytest.approx(target, abs=1e-12)
        assert ((ratios >= 0) & (ratios <= 0.99)).all()


def test_a_block_with_zero_sensitivity_gets_the_cap():
    curves = [lambda s: 0.0, lambda s: 2.0 * s ** 2, lambda s: 1.0 * s ** 2]
    ratios, predicted = additive_allocation(curves, 0.6, [1, 1, 1], step=0.01)
    assert ratios[0] == pytest.approx(0.99)
    assert ratios.mean() == pytest.approx(0.6, abs=1e-12)
    # the rest splits the remaining 0.81 so that the marginal costs match: 4 s1 = 2 s2
    assert ratios[2] == pytest.approx(2 * ratios[1], abs=0.011)
    with pytest.raises(AllocationError, match="per-layer cap"):
        additive_allocation(curves, 0.995, [1, 1, 1])


def test_interpolation_through_zero_and_past_the_last_level():
    levels, values = [0.5, 0.7], [0.1, 0.5]
    assert interpolate(levels, values, 0.0) == 0.0
    assert interpolate(levels, values, 0.25) == pytest.approx(0.05)
    assert interpolate(levels, values, 0.6) == pytest.approx(0.3)
    assert interpolate(levels, values, 0.8) == pytest.approx(0.7)  # slope 2 continues
    assert interpolate(levels, [0.3, 0.2], 0.9) == pytest.approx(0.2)  # never below the last


# --- the measurement ---------------------------------------------------------------------


def _brute_force(model, l, s, pruner, calibration, held):
    """Block l of a fresh copy pruned to s with statistics from hooks on the dense model's
    ordinary forward over the calibration windows, then a full forward of every held window."""
    blocks = discover_blocks(model)
    matrices = blocks[l].matrices
    stats = InputStatistics(need_hessian=pruner == "sparsegpt")
    handles = stats.hooks(matrices)
    with torch.no_grad():
        for w in calibration:
            model(w[None])
    for h in handles:
        h.remove()
    pruned = copy.deepcopy(model)
    for m, mp in zip(matrices, discover_blocks(pruned)[l].matrices, strict=True):
        W = oriented_weight(mp)
        W.copy_(prune_matrix(oriented_weight(m), s, pruner, stats, m.name))
    return np.mean(dense_nll(pruned, held)) - np.mean(dense_nll(model, held))


@pytest.mark.parametrize("pruner", ["wanda", "sparsegpt", "magnitude"])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_measurement_equals_brute_force_and_restores_weights(pruner, arch, tokenizer, calib):
    model = build_tiny_model(arch, len(tokenizer), layers=3).double().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calibration = calibration_samples(tokenizer, calib, 4, 24, 0)
    held = calibration_samples(tokenizer, calib, 3, 32, 1)
    levels = [0.3, 0.6]
    result = measure_sensitivity(model, pruner, levels, calibration, held, progress=False)
    assert result.delta.shape == (3, 2) and result.window_delta.shape == (3, 2, 3)
    for l in range(3):
        for k, s in enumerate(levels):
            want = _brute_force(model, l, s, pruner, calibration, held)
            assert result.delta[l, k] == pytest.approx(want, rel=1e-6, abs=1e-12), (l, s)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert (result.low <= result.delta + 1e-12).all()
    assert (result.delta <= result.high + 1e-12).all()
    assert np.ptp(result.delta) > 0


def test_measured_increase_restores_weights(tokenizer, calib):
    model = build_tiny_model("llama", len(tokenizer), layers=2).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calibration = calibration_samples(tokenizer, calib, 4, 24, 0)
    held = calibration_samples(tokenizer, calib, 3, 32, 1)
    dense = dense_nll(model, held)
    increase = measured_increase(model, [0.3, 0.6], "wanda", calibration, held, dense)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    from layerif.pruning.prune import prune_model

    pruned = copy.deepcopy(model)
    prune_model(pruned, [0.3, 0.6], "wanda", calibration, progress=False)
    want = np.mean(dense_nll(pruned, held)) - np.mean(dense)
    assert increase == pytest.approx(want, rel=1e-9) and increase != 0


def test_an_interrupted_measurement_resumes_bit_for_bit_and_counts_its_earlier_time(
        tokenizer, calib, tmp_path):
    """Killed after block 0, resumed: the same table bit for bit, block 0 loaded (not run
    again), and the reported cost includes the time block 0 took in the first run."""
    from layerif.influence.checkpoint import StepCache

    model = build_tiny_model("llama", len(tokenizer), layers=3).eval()
    calibration = calibration_samples(tokenizer, calib, 4, 24, 0)
    held = calibration_samples(tokenizer, calib, 3, 32, 1)
    whole = measure_sensitivity(model, "wanda", [0.3, 0.6], calibration, held, progress=False)
    cache = StepCache(tmp_path / "resume", {"run": 1})

    def killed_at_block_1(name, compute):
        if name == "block-1":
            raise KeyboardInterrupt
        return cache(name, compute)

    with pytest.raises(KeyboardInterrupt):
        measure_sensitivity(model, "wanda", [0.3, 0.6], calibration, held, progress=False,
                            steps=killed_at_block_1)
    # the first run's block 0 as if it had taken 1000 s (a real Qwen block takes minutes)
    first = torch.load(tmp_path / "resume" / "block-0.pt", weights_only=True)
    torch.save({**first, "seconds": torch.tensor(1000.0)}, tmp_path / "resume" / "block-0.pt")
    resumed = StepCache(tmp_path / "resume", {"run": 1})
    result = measure_sensitivity(model, "wanda", [0.3, 0.6], calibration, held,
                                 progress=False, steps=resumed)
    assert resumed.resumed == ["dense", "block-0"]
    np.testing.assert_array_equal(result.window_delta, whole.window_delta)
    block_seconds = result.extra["block_seconds"]
    assert len(block_seconds) == 3 and block_seconds[0] == 1000.0
    assert 1000 + sum(block_seconds[1:]) - 0.1 <= result.seconds < 2000  # (0.1: rounding)


# --- the command ------------------------------------------------------------------------


def _held_file(tmp_path):
    import json

    from conftest import PAIRS

    path = tmp_path / "held.jsonl"
    texts = [f"{p} {c}. " * 6 for p, c in PAIRS]  # not the calibration texts
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def test_sensitivity_command_writes_resumes_and_feeds_an_allocation(tiny_model_dir, calib,
                                                                   tmp_path, capsys):
    import json

    from layerif.cli import main

    model = tiny_model_dir("llama")
    held = _held_file(tmp_path)
    out = tmp_path / "sens"
    common = ["sensitivity", "--model", str(model), "--pruner", "wanda", "--levels", "0.5,0.7",
              "--calibration", str(calib), "--nsamples", "4", "--seqlen", "32", "--held",
              str(held), "--held-windows", "3", "--device", "cpu", "--quiet"]
    alloc = tmp_path / "u.json"
    assert main(["allocate", "sparsity", "--method", "uniform", "--sparsity", "0.6", "--model",
                 str(model), "--out", str(alloc)]) == 0
    assert main([*common, "--check", str(alloc), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "sensitivity.json").read_text())
    assert (out / "sensitivity.png").stat().st_size > 0
    assert record["levels"] == [0.5, 0.7] and len(record["delta"]) == 2
    assert record["held"] == {"source": str(held), "windows": 3, "seqlen": 32}
    assert {s["role"] for s in record["provenance"]} == {"held (sensitivity)", "calibration"}
    assert record["machine"] == machine_record()  # where it ran, as an experiment cell says
    assert f"s on {describe_machine(record['machine'])}" in printed
    (check,) = record["additivity"]
    assert check["name"] == "u" and check["predicted"] == pytest.approx(
        sum(interpolate(record["levels"], row, 0.6) for row in record["delta"]))
    assert "additivity, u: predicted" in printed and "s=0.50" in printed
    assert not (tmp_path / ".sens.resume").exists()
    # the allocation from it: the target exact, the blocks' ratios from the measured curves
    a = tmp_path / "a.json"
    assert main(["allocate", "sparsity", "--method", "sensitivity", "--sensitivity", str(out),
                 "--sparsity", "0.6", "--model", str(model), "--out", str(a)]) == 0
    made = json.loads(a.read_text())
    assert made["global_sparsity"] == pytest.approx(0.6, abs=1e-12)
    assert made["parameters"]["predicted_nll_increase"] == pytest.approx(sum(
        interpolate(record["levels"], row, s) for row, s in zip(record["delta"],
                                                                made["ratios"], strict=True)))
    # no block past the largest measured level (0.7) by default: the curves are not measured
    # there; --sensitivity-cap allows it (extrapolated, recorded)
    assert max(made["ratios"]) <= 0.7 + 1e-12 and made["parameters"]["cap"] == 0.7
    assert made["parameters"]["extrapolated"] is False
    capped = tmp_path / "c.json"
    assert main(["allocate", "sparsity", "--method", "sensitivity", "--sensitivity", str(out),
                 "--sparsity", "0.6", "--model", str(model), "--out", str(capped),
                 "--sensitivity-cap", "0.95"]) == 0
    made = json.loads(capped.read_text())
    assert made["parameters"]["cap"] == 0.95 and made["parameters"]["extrapolated"] is True
    assert max(made["ratios"]) <= 0.95 + 1e-12
    capsys.readouterr()
    assert main(["allocate", "sparsity", "--method", "sensitivity", "--sensitivity", str(out),
                 "--sparsity", "0.75", "--model", str(model), "--out", str(capped)]) == 2
    assert "above 0.7, the largest level" in capsys.readouterr().err


def test_held_text_sharing_the_calibration_is_refused(tiny_model_dir, calib, tmp_path, capsys):
    from layerif.cli import main

    out = tmp_path / "sens"
    code = main(["sensitivity", "--model", str(tiny_model_dir("llama")), "--pruner", "wanda",
                 "--levels", "0.5", "--calibration", str(calib), "--held", str(calib),
                 "--held-windows", "2", "--seqlen", "16", "--nsamples", "2", "--quiet",
                 "--out", str(out)])
    assert code == 2 and not out.exists()
    assert "shares content" in capsys.readouterr().err


@pytest.mark.parametrize("levels", ["0.7,0.5", "0,0.5", "0.5,1.0", "x"])
def test_bad_levels_are_refused(levels, tiny_model_dir, tmp_path, capsys):
    from layerif.cli import main

    code = main(["sensitivity", "--model", str(tiny_model_dir("llama")), "--pruner", "wanda",
                 "--levels", levels, "--out", str(tmp_path / "s")])
    assert code == 2 and "--levels" in capsys.readouterr().err


# --- layer scores against the truth -------------------------------------------------------


def test_agreement_on_profiles_with_a_known_ordering():
    from layerif.sensitivity.compare import agreement, agreement_with_interval

    rng = np.random.default_rng(0)
    truth = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.2])
    # a prune-more score ranked exactly against the damage: it prunes where it hurts least
    assert agreement(-truth, truth, "lsa") == pytest.approx(1.0)
    assert agreement(truth, truth, "layerif") == pytest.approx(-1.0)
    # OWL prunes less where its score is higher: the truth itself is a perfect OWL score
    assert agreement(truth, truth, "owl") == pytest.approx(1.0)
    # an allocation's ratios: more pruning on the less damaged blocks agrees, the reverse not;
    # equal ratios have no ranking
    assert agreement(1 - truth, truth, "allocation") == pytest.approx(1.0)
    assert agreement(truth, truth, "allocation") == pytest.approx(-1.0)
    assert np.isnan(agreement(np.full(6, 0.7), truth, "allocation"))
    windows = truth[:, None] + rng.normal(0, 0.01, (6, 40))
    a = agreement_with_interval("x", "dlp", lambda _r: -truth, windows)
    assert a.agreement == pytest.approx(1.0) and a.low > 0.8
    noisy = truth[:, None] + rng.normal(0, 1.0, (6, 40))
    b = agreement_with_interval("x", "dlp", lambda _r: -truth, noisy)
    assert b.high - b.low > a.high - a.low  # noisier windows, wider interval


def test_delta_at_interpolates_between_levels_per_window():
    from layerif.sensitivity.compare import delta_at

    wd = np.zeros((2, 2, 3))
    wd[:, 0, :] = 1.0  # level 0.5
    wd[:, 1, :] = 3.0  # level 0.7
    np.testing.assert_allclose(delta_at([0.5, 0.7], wd, 0.6), 2.0)
    np.testing.assert_allclose(delta_at([0.5, 0.7], wd, 0.25), 0.5)
    np.testing.assert_allclose(delta_at([0.5, 0.7], wd, 0.7), 3.0)
