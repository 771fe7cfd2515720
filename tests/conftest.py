"""Shared fixtures: the SmolLM2 tokenizer (offline, from the packaged GGUF) and tiny random
models of several architectures built from configs, so block discovery is never Llama-only."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from layerif.models import load_tokenizer

ARCHITECTURES = ("llama", "mistral", "qwen2", "gemma", "gemma3", "gpt2")


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer("smollm2-135m")


def tiny_config(arch: str, vocab_size: int, layers: int = 2):
    import transformers as tf

    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    if arch == "llama":
        return tf.LlamaConfig(**common)
    if arch == "mistral":
        return tf.MistralConfig(**common, sliding_window=None)
    if arch == "qwen2":  # Qwen2.5's shape: q/k/v biases, grouped-query attention, untied head
        return tf.Qwen2Config(**{**common, "tie_word_embeddings": False})
    if arch == "gemma":
        return tf.GemmaConfig(**common, head_dim=8)
    if arch == "gemma3":
        return tf.Gemma3TextConfig(**common, head_dim=8, sliding_window=16)
    if arch == "gpt2":
        return tf.GPT2Config(
            vocab_size=vocab_size, n_embd=32, n_layer=layers, n_head=4, n_positions=256,
            bos_token_id=0, eos_token_id=0,
        )
    raise ValueError(arch)


def build_tiny_model(arch: str, vocab_size: int, layers: int = 2, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, vocab_size, layers))
    # Random init is small (std 0.02); widen it so gradients and influences are far from zero.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in name and "wte" not in name and "wpe" not in name:
                p.mul_(5.0)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_models(tokenizer):
    cache: dict[str, torch.nn.Module] = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = build_tiny_model(arch, len(tokenizer))
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_models, tokenizer):
    """A saved Hugging Face folder (model + SmolLM2 tokenizer) of a tiny architecture."""
    made: dict[str, object] = {}

    def get(arch: str):
        if arch not in made:
            path = tmp_path_factory.mktemp(f"tiny-{arch}")
            tiny_models(arch).save_pretrained(path)
            tokenizer.save_pretrained(path)
            made[arch] = path
        return made[arch]

    return get


TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Influence functions estimate how a training example changes the loss.",
    "Paris is the capital of France and its largest city.",
    "A short one.",
    "Large language models have many layers of different quality, some better trained.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "She sells sea shells by the sea shore, and the shells she sells are surely seashells.",
]

PAIRS = [
    ("Question: What is two plus two?\nAnswer:", " four"),
    ("Question: What colour is the sky on a clear day?\nAnswer:", " blue"),
    ("Is the earth flat?\nAnswer:", " no, it is round"),
    ("Translate to French: cat\nAnswer:", " chat"),
    ("Question: Which planet is closest to the sun?\nAnswer:", " Mercury"),
    ("Complete: to be or not to", " be, that is the question"),
]


@pytest.fixture(scope="module")
def tiny_dir(tiny_model_dir):
    """The tiny Llama's saved folder (the model most CLI tests run on)."""
    return tiny_model_dir("llama")


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    """A JSONL of calibration texts (TEXTS four times)."""
    path = tmp_path_factory.mktemp("calib") / "calib.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS * 4))
    return path


class Killed(Exception):
    """What `killed_at_step` raises: a kill in the middle of a training run."""


@contextlib.contextmanager
def killed_at_step(monkeypatch, n: int):
    """A context in which the n-th AdamW step (1-based, counted from entry) raises Killed
    before it changes anything, as a kill would land there; the context expects it."""
    calls = {"n": 0}
    real = torch.optim.AdamW.step

    def step_then_die(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise Killed
        return real(self, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(torch.optim.AdamW, "step", step_then_die)
        with pytest.raises(Killed):
            yield
