"""A killed scoring run resumes after its last finished step, with identical results."""

from __future__ import annotations

import pytest
from conftest import PAIRS, TEXTS

import layerif
from layerif.influence.engine import GradientEngine, GradientSource

TRAIN = [{"text": t} for t in TEXTS]
VAL = [{"prompt": p, "completion": c} for p, c in PAIRS[:3]]


class Killed(Exception):
    pass


def test_killed_run_resumes_after_finished_steps(tmp_path, tiny_models, tokenizer, monkeypatch):
    model = tiny_models("llama")
    kw = dict(tokenizer=tokenizer, mode="streaming", max_length=48, progress=False)
    reference = layerif.score_layers(model, TRAIN, VAL, **kw).influence

    passes = []
    real_run = GradientEngine.run
    monkeypatch.setattr(GradientEngine, "run",
                        lambda self, b, cb, desc: (passes.append(desc), real_run(self, b, cb,
                                                                                 desc))[1])

    real_weighted_sum = GradientSource.weighted_sum

    def die_in_step_3(self, weights, desc):
        if desc.startswith("2/3"):  # DataInf's third step: the weighted sum over training
            raise Killed
        return real_weighted_sum(self, weights, desc)

    ckpt = tmp_path / "ckpt"
    with monkeypatch.context() as m:
        m.setattr(GradientSource, "weighted_sum", die_in_step_3)
        with pytest.raises(Killed):
            layerif.score_layers(model, TRAIN, VAL, checkpoint_dir=ckpt, **kw)
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "dots_and_norms.pt", "fingerprint.json", "val_mean_gradient.pt"]

    passes.clear()
    resumed = layerif.score_layers(model, TRAIN, VAL, checkpoint_dir=ckpt, **kw)
    assert len(passes) == 2  # only the weighted sum and the dots with u were recomputed
    assert resumed.influence.tobytes() == reference.tobytes()
    assert not ckpt.exists()  # removed once the run completed


def test_checkpoint_of_another_run_is_not_used(tmp_path, tiny_models, tokenizer):
    model = tiny_models("llama")
    kw = dict(tokenizer=tokenizer, mode="streaming", max_length=48, progress=False)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "fingerprint.json").write_text('{"model": "something else"}')
    (ckpt / "val_mean_gradient.pt").write_bytes(b"garbage")
    got = layerif.score_layers(model, TRAIN, VAL, checkpoint_dir=ckpt, **kw).influence
    want = layerif.score_layers(model, TRAIN, VAL, **kw).influence
    assert got.tobytes() == want.tobytes()
