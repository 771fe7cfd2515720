"""LoRA-MoE layers: routing by hand, reductions to LoRA and to the base model, training and
save/load."""

from __future__ import annotations

import pytest
import torch
from conftest import TEXTS, build_tiny_model, killed_at_step

from layerif.moe import (
    LoRAMoELinear,
    MoEConfig,
    apply_lora_moe,
    aux_loss,
    load_adapters,
    save_adapters,
)


def test_top_k_routing_by_hand():
    layer = LoRAMoELinear(torch.nn.Linear(2, 3), n_experts=3, rank=1)
    with torch.no_grad():
        layer.router.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    x = torch.tensor([[2.0, 1.0]])  # logits (2, 1, 0): softmax p = e^(2,1,0) / sum
    p = torch.softmax(torch.tensor([2.0, 1.0, 0.0]), 0)
    expected = torch.tensor([p[0] / (p[0] + p[1]), p[1] / (p[0] + p[1]), 0.0])
    torch.testing.assert_close(layer.routing(x)[0], expected)


def test_one_expert_is_plain_lora_and_zero_b_is_the_base():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 4)
    layer = LoRAMoELinear(base, n_experts=1, rank=2, alpha=8, dropout=0.0).eval()
    x = torch.randn(5, 6)
    torch.testing.assert_close(layer(x), base(x))  # B starts at zero
    with torch.no_grad():
        layer.lora_B.normal_()
    A, B = layer.lora_A[0], layer.lora_B[0]
    torch.testing.assert_close(layer(x), base(x) + (8 / 2) * x @ A.T @ B.T)
    assert layer.router is None and layer.top_k == 1


def test_mixture_equals_weighted_experts():
    torch.manual_seed(1)
    layer = LoRAMoELinear(torch.nn.Linear(6, 4), n_experts=4, rank=2, dropout=0.0).eval()
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 6)
    g = layer.routing(x)
    assert ((g > 0).sum(-1) == 2).all() and torch.allclose(g.sum(-1), torch.ones(3))
    manual = layer.base(x) + layer.scaling * sum(
        g[:, e : e + 1] * (x @ layer.lora_A[e].T @ layer.lora_B[e].T) for e in range(4))
    torch.testing.assert_close(layer(x), manual)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_training_save_and_load(arch, tokenizer, tmp_path):
    model = build_tiny_model(arch, len(tokenizer), layers=2)
    ids = torch.tensor([tokenizer(TEXTS[1])["input_ids"]])
    with torch.no_grad():
        base_logits = model(ids).logits
    targets = None if arch == "llama" else []
    config = MoEConfig(experts=[1, 3], rank=4, dropout=0.0, targets=targets)
    adapted = apply_lora_moe(model, config)
    assert len(adapted) == (14 if arch == "llama" else 8)
    with torch.no_grad():  # zero-initialised B: still the base model
        torch.testing.assert_close(model(ids).logits, base_logits)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_" in n or ".router." in n) for n in trainable)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(25):
        loss = model(ids, labels=ids).loss
        total = loss + 0.001 * aux_loss(model)
        opt.zero_grad()
        total.backward()
        assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
        opt.step()
        losses.append(loss.item())
    # The adapters fit the text. (Logits of this tiny model move by < ~0.6 at most: its tied
    # embeddings have std 0.02, so a drop of 0.3 nats is most of what is reachable.)
    assert losses[-1] < losses[0] - 0.3
    model.eval()
    with torch.no_grad():
        tuned = model(ids).logits
    save_adapters(model, config, tmp_path / "adapter")
    fresh = build_tiny_model(arch, len(tokenizer), layers=2)
    load_adapters(fresh, tmp_path / "adapter")
    with torch.no_grad():
        assert torch.equal(fresh.eval()(ids).logits, tuned)


def test_allocation_must_match_layers(tokenizer):
    from layerif.errors import LayerIFError

    model = build_tiny_model("llama", len(tokenizer), layers=2)
    with pytest.raises(LayerIFError, match="3 layers, the model 2"):
        apply_lora_moe(model, MoEConfig(experts=[1, 2, 3]))


@pytest.mark.parametrize("within_epoch", [False, True], ids=["epoch-end", "within-epoch"])
def test_finetune_resumes_to_the_same_result(tokenizer, tmp_path, monkeypatch, within_epoch):
    """Killed in the second epoch's first step (resumed from the first epoch's checkpoint) or in
    its second step with a checkpoint after every step (resumed within the epoch: the dropout
    generator's state and the epoch's losses so far come back): the same adapters and losses."""
    import layerif.training
    from layerif.data import Example
    from layerif.moe.train import FinetuneArguments, finetune_moe

    if within_epoch:
        monkeypatch.setattr(layerif.training, "CHECKPOINT_SECONDS", 0.0)

    examples = [Example(str(i), prompt=t[:20], completion=" " + t[20:40])
                for i, t in enumerate(TEXTS)]
    args = FinetuneArguments(epochs=2, lr=1e-2, batch_size=3)
    config = MoEConfig(experts=[2, 3], rank=2)

    def run(out):
        model = build_tiny_model("llama", len(tokenizer), layers=2)
        summary = finetune_moe(model, tokenizer, config, examples, out, args, progress=False)
        return model, summary

    reference, summary = run(tmp_path / "a")
    assert len(summary["history"]) == 2 and (tmp_path / "a" / "training.json").exists()

    with killed_at_step(monkeypatch, 5 if within_epoch else 4):  # (3 batches per epoch)
        run(tmp_path / "b")
    assert (tmp_path / ".b.checkpoint" / "state.pt").exists() and not (tmp_path / "b").exists()
    position = torch.load(tmp_path / ".b.checkpoint" / "state.pt", weights_only=False)["position"]
    assert (position["batches"] if within_epoch else position) == (1 if within_epoch else None)
    resumed, summary_b = run(tmp_path / "b")
    assert summary_b["history"] == summary["history"]
    for (n, p), (_, q) in zip(reference.named_parameters(), resumed.named_parameters(),
                              strict=True):
        assert torch.equal(p, q), n
    assert not (tmp_path / ".b.checkpoint").exists()


def test_length_grouped_batches_cover_every_example_once_with_less_padding():
    from layerif.training import epoch_batches

    lengths = torch.randint(20, 400, (237,), generator=torch.Generator().manual_seed(1)).tolist()

    def run(group, seed=0):
        return epoch_batches(lengths, 4, torch.Generator().manual_seed(seed), group)

    def padded(batches):  # tokens a batch padded to its longest row holds
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    plain, grouped = run(False), run(True)
    for batches in (plain, grouped):
        assert sorted(i for b in batches for i in b) == list(range(237))
    # plain batches are the shuffle's consecutive chunks, as before the option existed
    assert [i for b in plain for i in b] == torch.randperm(
        237, generator=torch.Generator().manual_seed(0)).tolist()
    assert padded(grouped) < 0.8 * padded(plain)  # sorted within 200 examples at a time
    assert sum(len(b) for b in grouped) == 237 and sorted(map(len, grouped))[1:] == [4] * 59
    assert run(True) == grouped and run(True, seed=1) != grouped  # seeded


def test_length_grouped_training_is_seeded_and_learns(tokenizer, tmp_path):
    from layerif.data import Example
    from layerif.moe.train import FinetuneArguments, finetune_moe

    examples = [Example(str(i), prompt=t[: 6 + 6 * i], completion=" " + t[-12:])
                for i, t in enumerate(TEXTS)]
    args = FinetuneArguments(epochs=3, lr=1e-2, batch_size=2, group_by_length=True)
    config = MoEConfig(experts=[2, 1], rank=2)

    def run(out):
        model = build_tiny_model("llama", len(tokenizer), layers=2)
        return model, finetune_moe(model, tokenizer, config, examples, out, args,
                                   progress=False)

    (a, sa), (b, sb) = run(tmp_path / "a"), run(tmp_path / "b")
    assert sa["history"] == sb["history"]
    assert sa["history"][-1]["loss"] < sa["history"][0]["loss"]
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_one_expert_per_layer_trains_exactly_like_peft_lora(tokenizer, dropout, tmp_path):
    """Issue 46: a LoRA-MoE with one expert per layer (top-1, no router) is plain LoRA. Given
    peft's initial adapters, the two give the same outputs, the same gradients after a step and
    the same loss curve over two epochs of the shared loop (same data order, same dropout
    draws), to float tolerance; and `matched_rank` of a one-expert mixture is its rank."""
    from peft import LoraConfig, get_peft_model

    from layerif.data import Example
    from layerif.moe import matched_rank, plain_lora_config
    from layerif.training import FinetuneArguments, train_adapters

    config = MoEConfig(experts=[1, 1], rank=4, alpha=8, dropout=dropout, top_k=1)
    skeleton = build_tiny_model("llama", len(tokenizer), layers=2)
    assert matched_rank(skeleton, config)[0] == 4
    lora = plain_lora_config(skeleton, 4, scaling=config.alpha / config.rank, dropout=dropout,
                             targets=config.targets)
    torch.manual_seed(0)
    plain = get_peft_model(build_tiny_model("llama", len(tokenizer), layers=2), LoraConfig(**lora))
    moe = build_tiny_model("llama", len(tokenizer), layers=2)
    apply_lora_moe(moe, config)
    peft_layers = {n.removeprefix("base_model.model."): m for n, m in plain.named_modules()
                   if hasattr(m, "lora_A") and "default" in m.lora_A}
    moe_layers = {n: m for n, m in moe.named_modules() if isinstance(m, LoRAMoELinear)}
    assert peft_layers.keys() == moe_layers.keys() and len(moe_layers) == 14
    with torch.no_grad():  # peft's initial A; a random B on both (zero B would hide the A side)
        for name, layer in moe_layers.items():
            peft_layer = peft_layers[name]
            peft_layer.lora_B["default"].weight.normal_(0, 0.5)
            layer.lora_A.copy_(peft_layer.lora_A["default"].weight[None])
            layer.lora_B.copy_(peft_layer.lora_B["default"].weight[None])
    ids = torch.tensor([tokenizer(TEXTS[0])["input_ids"]])
    for model in (plain, moe):
        model.train()
    torch.manual_seed(7)
    loss_plain = plain(ids, labels=ids).loss
    torch.manual_seed(7)
    loss_moe = moe(ids, labels=ids).loss
    torch.testing.assert_close(loss_moe, loss_plain, rtol=1e-6, atol=1e-6)
    loss_plain.backward()
    loss_moe.backward()
    for name, layer in moe_layers.items():
        torch.testing.assert_close(layer.lora_A.grad[0],
                                   peft_layers[name].lora_A["default"].weight.grad,
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer.lora_B.grad[0],
                                   peft_layers[name].lora_B["default"].weight.grad,
                                   rtol=1e-5, atol=1e-6)
    for model in (plain, moe):
        model.zero_grad()
    # peft passes logits_to_keep on: plain LoRA forms logits at the answer positions only, as the
    # mixture does (a full (T, vocab) head would make the reference the slower one)
    from layerif.data.encode import _keeps_positions

    assert _keeps_positions(plain) and _keeps_positions(moe)
    examples = [Example(str(i), prompt=t[:20], completion=" " + t[20:40])
                for i, t in enumerate(TEXTS)]
    args = FinetuneArguments(epochs=2, lr=1e-2, batch_size=3, seed=5)
    curves = [train_adapters(model, tokenizer, examples, args, tmp_path / str(i), {},
                             progress=False)[0] for i, model in enumerate((plain, moe))]
    assert [h["epoch"] for h in curves[0]] == [1, 2]
    for a, b in zip(*curves, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    for name, layer in moe_layers.items():
        torch.testing.assert_close(layer.lora_B.detach()[0],
                                   peft_layers[name].lora_B["default"].weight.detach(),
                                   rtol=1e-4, atol=1e-5)
