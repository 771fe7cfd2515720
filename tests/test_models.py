"""Block discovery across architectures, and model-loading errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import ARCHITECTURES

from layerif.errors import ModelError
from layerif.models import discover_blocks, load_model

EXPECTED_MATRICES = {  # per block: (attention matrices, MLP matrices)
    "llama": (4, 3), "mistral": (4, 3), "qwen2": (4, 3), "gemma": (4, 3), "gemma3": (4, 3),
    "gpt2": (2, 2),
}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_blocks_and_matrices_are_found(arch, tiny_models):
    model = tiny_models(arch)
    blocks = discover_blocks(model)
    assert [b.index for b in blocks] == [0, 1]
    n_attn, n_mlp = EXPECTED_MATRICES[arch]
    for block in blocks:
        kinds = [m.kind for m in block.matrices]
        assert kinds.count("attn") == n_attn and kinds.count("mlp") == n_mlp, kinds
        for m in block.matrices:
            assert m.numel == m.weight.numel() and m.layer == block.index
    attn = discover_blocks(model, "attn")
    assert all(m.kind == "attn" for b in attn for m in b.matrices)
    assert sum(len(b.matrices) for b in attn) == 2 * n_attn
    assert sum(len(b.matrices) for b in discover_blocks(model, "mlp")) == 2 * n_mlp


def test_no_blocks_is_a_clear_error():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3))
    with pytest.raises(ModelError, match=r"no decoder blocks found in Sequential: searched"):
        discover_blocks(model)
    with pytest.raises(ModelError, match="unknown params selection"):
        discover_blocks(model, "bias")


def test_bad_model_names(tmp_path):
    with pytest.raises(ModelError, match="GGUF file .* does not exist"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelError, match="folder without config.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelError, match="neither a model folder nor a .gguf file"):
        load_model("./no/such/model")


def test_unknown_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=r"not a built-in name \(smollm2-135m, qwen2.5-coder"):
        load_model("no-such-org/no-such-model-xyz")


def test_local_folder_roundtrip(tmp_path, tiny_models, tokenizer):
    model = tiny_models("qwen2")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, tok = load_model(str(tmp_path), device="cpu")
    ids = torch.tensor([tok("hello world")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    assert tok.padding_side == "right" and tok.pad_token is not None


def test_gguf_file_is_cached_under_layerif_cache(tmp_path, monkeypatch):
    """A .gguf path is converted once into $LAYERIF_CACHE and reused afterwards."""
    from layerif.models import builtin_gguf_path, load_tokenizer

    monkeypatch.setenv("LAYERIF_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "model.gguf"
    gguf.symlink_to(builtin_gguf_path("smollm2-135m"))
    tok = load_tokenizer(str(gguf))
    (folder,) = (tmp_path / "cache" / "gguf").iterdir()
    stamp = (folder / "tokenizer.json").stat().st_mtime_ns
    assert tok("hello world")["input_ids"] == load_tokenizer(str(gguf))("hello world")["input_ids"]
    assert (folder / "tokenizer.json").stat().st_mtime_ns == stamp  # not converted again
    assert not (folder / "config.json").exists()  # weights are converted only when needed


def test_a_replaced_gguf_drops_its_old_copy_and_a_builtin_keys_by_digest(tmp_path, monkeypatch):
    """A GGUF replaced at the same path (a new file time) is converted again and the copy of the
    old file is removed (each is GBs); another file's copy stays. A built-in model's copy is
    keyed by its known digest, so a re-written file of the same content keeps its copy."""
    import shutil

    from layerif.models import _gguf_cache_dir, builtin_gguf_path, load_tokenizer

    monkeypatch.setenv("LAYERIF_CACHE", str(tmp_path / "cache"))
    gguf, other = tmp_path / "model.gguf", tmp_path / "other.gguf"
    shutil.copyfile(builtin_gguf_path("smollm2-135m"), gguf)
    other.symlink_to(builtin_gguf_path("smollm2-135m"))
    for path in (gguf, other):
        load_tokenizer(str(path))
    old, kept = _gguf_cache_dir(gguf), _gguf_cache_dir(other)
    assert old.is_dir() and kept.is_dir()
    st = gguf.stat()
    os.utime(gguf, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file was replaced
    load_tokenizer(str(gguf))
    assert _gguf_cache_dir(gguf) != old and _gguf_cache_dir(gguf).is_dir()
    assert sorted((tmp_path / "cache" / "gguf").iterdir()) == sorted([_gguf_cache_dir(gguf), kept])
    digest = "ab" * 32
    before = _gguf_cache_dir(gguf, digest)
    os.utime(gguf, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    assert _gguf_cache_dir(gguf, digest) == before


def test_unknown_dtype():
    with pytest.raises(ModelError, match="unknown dtype 'int3'"):
        load_model("smollm2-135m", dtype="int3")


def test_model_folder_prints_the_folder_a_model_loads_from(tiny_model_dir, capsys):
    from layerif.cli import main

    folder = tiny_model_dir("llama")
    assert main(["model-folder", str(folder)]) == 0
    assert capsys.readouterr().out.strip() == str(Path(folder).resolve())
    assert main(["model-folder", "someone/some-model"]) == 2
    assert "hub id" in capsys.readouterr().err


def _fake_parts(root, names, chunks, version="1.0"):
    """Installed-looking part packages: NAME/data/partNN.bin and a dist-info with VERSION."""
    for i, (name, chunk) in enumerate(zip(names, chunks, strict=True), start=1):
        (root / name / "data").mkdir(parents=True)
        (root / name / "__init__.py").write_text("")
        (root / name / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        info = root / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\n"
                                       f"Version: {version}\n")


def test_builtin_parts_are_assembled_and_checked_by_digest(tmp_path, monkeypatch):
    import hashlib
    import importlib

    from layerif.models import BUILTIN_MODELS, BuiltinModel, builtin_gguf_path

    site = tmp_path / "site"
    chunks = [b"GGUF" + bytes(range(200)), bytes(range(100, 250)) * 3]
    _fake_parts(site, ["lfakepart1", "lfakepart2"], chunks)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setenv("LAYERIF_CACHE", str(tmp_path / "cache"))
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    spec = BuiltinModel("lfakepart1", "fake.gguf", "a test", parts=("lfakepart1", "lfakepart2"),
                        version="1.0", sha256=digest)
    monkeypatch.setitem(BUILTIN_MODELS, "fake", spec)
    path = builtin_gguf_path("fake")
    assert path.read_bytes() == b"".join(chunks)
    assert builtin_gguf_path("fake") == path  # the second call reuses the checked file
    # the same parts with other file times (another environment's install): not rewritten, so
    # that the de-quantised copy keyed on the file stays valid; a damaged file is rebuilt
    written = path.stat().st_mtime_ns
    for part in site.glob("lfakepart*/data/*.bin"):
        os.utime(part, ns=(written + 5 * 10**9, written + 5 * 10**9))
    assert builtin_gguf_path("fake").stat().st_mtime_ns == written
    path.write_bytes(b"GGUF damaged")
    assert builtin_gguf_path("fake").read_bytes() == b"".join(chunks)
    # another digest: refused, naming the install command, and nothing is left behind
    monkeypatch.setitem(BUILTIN_MODELS, "fake", BuiltinModel(
        "lfakepart1", "other.gguf", "a test", parts=spec.parts, version="1.0", sha256="0" * 64))
    with pytest.raises(ModelError, match="assemble to a file with SHA-256 .* reinstall"):
        builtin_gguf_path("fake")
    assert sorted(p.name for p in path.parent.iterdir()) == ["fake.gguf", "fake.sha256"]
    # a wrong version, and a missing part
    monkeypatch.setitem(BUILTIN_MODELS, "fake", BuiltinModel(
        "lfakepart1", "fake.gguf", "a test", parts=spec.parts, version="2.0", sha256=digest))
    with pytest.raises(ModelError, match=r"part 1 of 2 \(lfakepart1\) is version 1.0, not 2.0"):
        builtin_gguf_path("fake")
    monkeypatch.setitem(BUILTIN_MODELS, "fake", BuiltinModel(
        "lfakepart1", "fake.gguf", "a test", parts=(*spec.parts, "lfakepart3"), version="1.0",
        sha256=digest))
    with pytest.raises(ModelError, match=r"part 3 of 3 \(lfakepart3\) is not installed; run"):
        builtin_gguf_path("fake")
