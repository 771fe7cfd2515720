"""Per-layer LoRA ranks (`allocate ranks`), the peft LoraConfig written beside them, and peft
LoRA fine-tuning and evaluation (`finetune-lora`, `eval --adapter`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TEXTS, build_tiny_model, killed_at_step
from hypothesis import given, settings
from hypothesis import strategies as st

from layerif.allocation.api import RankAllocation
from layerif.allocation.experts import AllocationError, layerif_experts
from layerif.allocation.ranks import alphalora_ranks, layerif_ranks, uniform_ranks
from layerif.cli import main
from layerif.lora import lora_config, lora_config_path, wrap_lora

SPEC_S = [-5.0, -4.0, -3.0, 3.0, 4.0, 5.0]


def run(*args):
    return main([str(a) for a in args])


def test_spec_worked_example_in_rank_form():
    # SPEC section 2: S = [-5,-4,-3,3,4,5], T = 10, beta 2 -> [3,2,2,1,1,1]; as ranks the same.
    assert layerif_ranks(SPEC_S, 10).tolist() == [3, 2, 2, 1, 1, 1]
    # In units of 2 (min rank 2): the same split, doubled.
    assert layerif_ranks(SPEC_S, 20, min_rank=2, multiple_of=2).tolist() == [6, 4, 4, 2, 2, 2]
    # min rank 2, budget 16: w = (max S - S)^2 = [100,81,64,4,1,0], f = w/250 x (16 - 12)
    # = [1.6,1.296,1.024,.064,.016,0]; floor + 2 = [3,3,3,2,2,2] (15); the leftover 1 to the
    # largest remainder (.6, layer 0).
    assert layerif_ranks(SPEC_S, 16, min_rank=2).tolist() == [4, 3, 3, 2, 2, 2]
    # min rank 3 in multiples of 2: every layer starts at 4 (two units), 4 units to split:
    # f = w/250 x 4 as above -> floor + 2 units = [3,3,3,2,2,2], leftover 1 unit to layer 0.
    assert layerif_ranks(SPEC_S, 32, min_rank=3, multiple_of=2).tolist() == [8, 6, 6, 4, 4, 4]


@settings(max_examples=60, deadline=None)
@given(scores=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=12),
       min_rank=st.integers(1, 8), multiple_of=st.integers(1, 8), extra=st.integers(0, 40),
       beta=st.floats(0.5, 4))
def test_rank_invariants(scores, min_rank, multiple_of, extra, beta):
    if np.ptp(scores) == 0:
        scores[0] += 1.0
    n = len(scores)
    floor_rank = -(-min_rank // multiple_of) * multiple_of
    budget = n * floor_rank + extra * multiple_of
    for ranks in (layerif_ranks(scores, budget, beta, min_rank, multiple_of),
                  alphalora_ranks(np.abs(scores) + 1, budget, beta, min_rank, multiple_of),
                  uniform_ranks(n, budget, min_rank, multiple_of)):
        assert ranks.sum() == budget
        assert (ranks >= min_rank).all() and (ranks % multiple_of == 0).all()
    # min rank = multiple = 1 gives exactly the expert counts of the same budget
    if min_rank == multiple_of == 1:
        assert (layerif_ranks(scores, budget, beta) == layerif_experts(scores, budget,
                                                                       beta)).all()


def test_impossible_budgets_are_refused():
    with pytest.raises(AllocationError, match="not a multiple of --multiple-of 4"):
        layerif_ranks(SPEC_S, 26, multiple_of=4)
    with pytest.raises(AllocationError, match="use --budget >= 24"):
        uniform_ranks(6, 20, min_rank=4)


def write_scores(path, model, scores):
    path.mkdir(parents=True, exist_ok=True)
    (path / "scores.json").write_text(json.dumps({"model": str(model), "layers": list(
        range(len(scores))), "scores": scores, "aggregate": "net", "model_fingerprint": {}}))
    return path


@pytest.mark.parametrize("method", ["layerif", "uniform", "alphalora"])
def test_allocate_ranks_writes_a_config_peft_builds_unchanged(method, tiny_dir, tokenizer,
                                                              tmp_path):
    from peft import LoraConfig, get_peft_model

    scores = write_scores(tmp_path / "s", tiny_dir, [-3.0, 5.0])
    out = tmp_path / "ranks.json"
    assert run("allocate", "ranks", "--method", method, "--budget", 12, "--min-rank", 2,
               "--multiple-of", 2, "--scores", scores, "--model", tiny_dir, "--out", out) == 0
    alloc = RankAllocation.load(out)
    assert sum(alloc.ranks) == 12 and all(r >= 2 and r % 2 == 0 for r in alloc.ranks)
    if method == "layerif":  # the lower score (layer 0) gets the higher rank
        assert alloc.ranks[0] > alloc.ranks[1]
    config = json.loads(lora_config_path(out).read_text())
    model = get_peft_model(build_tiny_model("llama", len(tokenizer)), LoraConfig(**config))
    seen = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            base = name.removeprefix("base_model.model.")
            seen[base] = (module.r["default"], module.scaling["default"],
                          module.lora_A["default"].weight.shape[0])
    expected = {n: r for names, r in zip(alloc.modules, alloc.ranks, strict=True) for n in names}
    assert set(seen) == set(expected) and len(expected) == 14  # 7 matrices x 2 layers
    for name, (r, scaling, rows) in seen.items():
        assert r == rows == expected[name], name
        assert scaling == pytest.approx(2.0)  # alpha = 2 x rank in every layer


def test_gpt2_ranks_cover_its_conv1d_matrices(tiny_model_dir, tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    out = tmp_path / "ranks.json"
    assert run("allocate", "ranks", "--method", "uniform", "--budget", 6, "--model",
               tiny_model_dir("gpt2"), "--out", out) == 0
    config = json.loads(lora_config_path(out).read_text())
    model = get_peft_model(build_tiny_model("gpt2", len(tokenizer)), LoraConfig(**config))
    ranks = {n: m.r["default"] for n, m in model.named_modules() if hasattr(m, "lora_A")
             and "default" in m.lora_A}
    assert sorted(set(ranks.values())) == [3] and len(ranks) == 8  # c_attn, c_proj, c_fc, c_proj


def test_peft_lora_trains_saves_reloads_and_evaluates(tiny_dir, tokenizer, tmp_path):
    ranks = tmp_path / "ranks.json"
    assert run("allocate", "ranks", "--method", "uniform", "--budget", 8, "--model", tiny_dir,
               "--out", ranks) == 0
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"prompt": t[:20], "completion": t[20:40]}) + "\n"
                             for t in TEXTS if len(t) > 24))
    adapter = tmp_path / "adapter"
    assert run("finetune-lora", "--model", tiny_dir, "--ranks", ranks, "--train", train,
               "--epochs", 2, "--lr", 1e-2, "--batch-size", 3, "--quiet", "--out", adapter) == 0
    training = json.loads((adapter / "training.json").read_text())
    assert training["history"][1]["loss"] < training["history"][0]["loss"]
    # the adapter trained: B is no longer zero, and peft reloads it to the same logits
    from peft import PeftModel
    from safetensors.torch import load_file

    state = load_file(str(adapter / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in state.items())
    ids = tokenizer(TEXTS[0], return_tensors="pt").input_ids
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    with torch.no_grad():
        plain = base(ids).logits
        reloaded = PeftModel.from_pretrained(base, str(adapter)).eval()
        tuned = reloaded(ids).logits
    assert not torch.allclose(plain, tuned)
    # the trained model as it was at the end of training, rebuilt by hand
    config = json.loads(lora_config_path(ranks).read_text())
    again = wrap_lora(AutoModelForCausalLM.from_pretrained(tiny_dir), config)
    again.load_state_dict({k.replace(".lora_A.", ".lora_A.default.")
                           .replace(".lora_B.", ".lora_B.default."): v
                           for k, v in state.items()}, strict=False)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(ids).logits, tuned, rtol=0, atol=0)
    out = tmp_path / "eval.json"
    assert run("eval", "--model", tiny_dir, "--adapter", adapter, "--tasks", "boolq",
               "--limit", 4, "--ppl", "none", "--quiet", "--out", out) == 0
    result = json.loads(out.read_text())
    assert result["adapter"] == str(adapter) and result["tasks"]["boolq"]["n"] == 4


def test_lora_config_of_an_allocation_by_hand():
    alloc = RankAllocation("uniform", {}, "m", [0, 1], [2, 6], 8,
                           [["model.layers.0.q"], ["model.layers.1.q"]])
    config = lora_config(alloc, alpha_per_rank=1.5)
    assert config["rank_pattern"] == {"model.layers.0.q": 2, "model.layers.1.q": 6}
    assert config["alpha_pattern"] == {"model.layers.0.q": 3, "model.layers.1.q": 9}


def test_peft_lora_resumes_to_the_same_adapters(tokenizer, tmp_path, monkeypatch):
    from layerif.data import Example
    from layerif.lora import finetune_lora
    from layerif.training import FinetuneArguments

    examples = [Example(str(i), prompt=t[:20], completion=" " + t[20:40])
                for i, t in enumerate(TEXTS) if len(t) > 24]
    alloc = RankAllocation("uniform", {}, "m", [0, 1], [2, 6], 8, [
        [f"model.layers.{i}.{n}" for n in ("self_attn.q_proj", "mlp.down_proj")]
        for i in range(2)])
    config = lora_config(alloc)
    args = FinetuneArguments(epochs=2, lr=1e-2, batch_size=2, seed=3)

    def run_to(out):
        model = build_tiny_model("llama", len(tokenizer), layers=2)
        finetune_lora(model, tokenizer, config, examples, out, args, progress=False)
        from safetensors.torch import load_file

        return load_file(str(out / "adapter_model.safetensors"))

    reference = run_to(tmp_path / "a")
    assert {k for k in reference if "lora_A" in k} and all(
        v.shape[0] in (2, 6) for k, v in reference.items() if "lora_A" in k)

    with killed_at_step(monkeypatch, len(examples) // 2 + 1):  # the second epoch's first step
        run_to(tmp_path / "b")
    assert (tmp_path / ".b.checkpoint" / "state.pt").exists() and not (tmp_path / "b").exists()
    resumed = run_to(tmp_path / "b")
    assert reference.keys() == resumed.keys()
    for k in reference:
        assert torch.equal(reference[k], resumed[k]), k
    assert not torch.equal(reference[next(iter(reference))],  # another seed, other adapters
                           run_to_seed(tokenizer, config, examples, tmp_path / "c")
                           [next(iter(reference))])


def run_to_seed(tokenizer, config, examples, out, seed: int = 4):
    from safetensors.torch import load_file

    from layerif.lora import finetune_lora
    from layerif.training import FinetuneArguments

    model = build_tiny_model("llama", len(tokenizer), layers=2)
    finetune_lora(model, tokenizer, config, examples, out,
                  FinetuneArguments(epochs=2, lr=1e-2, batch_size=2, seed=seed), progress=False)
    return load_file(str(out / "adapter_model.safetensors"))


def test_bad_adapter_inputs_are_one_line_errors(tiny_dir, tmp_path, capsys):
    ranks = tmp_path / "ranks.json"
    assert run("allocate", "ranks", "--method", "uniform", "--budget", 4, "--model", tiny_dir,
               "--out", ranks) == 0
    lora_config_path(ranks).unlink()
    assert run("finetune-lora", "--model", tiny_dir, "--ranks", ranks, "--train",
               "boolq:validation[0:4]", "--out", tmp_path / "a") == 2
    assert "ranks.lora_config.json: missing" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run("eval", "--model", tiny_dir, "--adapter", tmp_path / "empty", "--tasks",
               "boolq", "--limit", 2, "--ppl", "none", "--out", tmp_path / "e.json") == 2
    err = capsys.readouterr().err
    assert "no adapter_config.json" in err and "Traceback" not in err
    assert run("allocate", "ranks", "--method", "uniform", "--budget", 7, "--multiple-of", 2,
               "--model", tiny_dir, "--out", tmp_path / "r2.json") == 2
    assert "not a multiple of --multiple-of 2" in capsys.readouterr().err
    assert not (tmp_path / "r2.json").exists() and not (tmp_path / "a").exists()


def test_adalora_prunes_to_its_budget_and_reloads(tokenizer, tmp_path):
    """peft's rank update runs after the optimiser step: run before it, the step rewrites the
    masked singular values and every matrix ends at init_r."""
    from peft import PeftModel

    from layerif.data import Example
    from layerif.lora import finetune_adalora
    from layerif.training import FinetuneArguments

    examples = [Example(str(i), prompt=t[:20], completion=" " + t[20:40])
                for i, t in enumerate(TEXTS) if len(t) > 24]
    model = build_tiny_model("llama", len(tokenizer), layers=2)
    out = tmp_path / "adalora"
    summary = finetune_adalora(model, tokenizer, examples, out, ["q_proj", "v_proj"],
                               FinetuneArguments(epochs=3, lr=1e-2, batch_size=1, seed=0),
                               init_r=6, target_r=2, progress=False)
    ranks = summary["ranks"]
    assert len(ranks) == 4 and sum(ranks.values()) == 2 * 4
    assert max(ranks.values()) <= 6 and set(ranks.values()) != {2}  # unequal, as it learned
    saved = json.loads((out / "adapter_config.json").read_text())["rank_pattern"]
    assert sorted(sum(v) for v in saved.values()) == sorted(ranks.values())
    ids = tokenizer(TEXTS[0], return_tensors="pt").input_ids
    with torch.no_grad():
        trained = model.eval()(ids).logits
        base = build_tiny_model("llama", len(tokenizer), layers=2)
        reloaded = PeftModel.from_pretrained(base, str(out)).eval()(ids).logits
    torch.testing.assert_close(reloaded, trained)
