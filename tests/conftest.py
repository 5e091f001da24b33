"""Shared fixtures. Every test runs offline: the hub is never reachable here or on CI."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "ROPE_LENS_HASHES" not in os.environ:
    # Weight-file digests of the tests' tmp folders (rope_lens.identity) go to a folder of
    # their own, not into the user's cache, and go with the session.
    import atexit
    import shutil
    import tempfile

    os.environ["ROPE_LENS_HASHES"] = tempfile.mkdtemp(prefix="rope-lens-hashes-")
    atexit.register(shutil.rmtree, os.environ["ROPE_LENS_HASHES"], True)

import pytest


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """One saved tiny random model folder per architecture (built once per session)."""
    from rope_lens.models.tiny import ARCHS, tiny_model_dir

    root = tmp_path_factory.mktemp("tiny")
    return {arch: tiny_model_dir(arch, root / arch) for arch in ARCHS}


@pytest.fixture(scope="session")
def tiny_lm(tiny_dirs):
    """Loader for tiny models on the default (native) backend, cached per architecture
    (read-only: don't mutate them)."""
    from rope_lens.models import load_model

    cache = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = load_model(str(tiny_dirs[arch]), device="cpu")
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def tiny_tl(tiny_dirs):
    """The same tiny models on the TransformerLens backend, whose pre-rotation vectors come
    from the bridge's own hooks (an independent reference for the native engine)."""
    from rope_lens.models import load_model

    cache = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = load_model(str(tiny_dirs[arch]), device="cpu", backend="tl")
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def family(tmp_path_factory):
    """Loader for the tiny model of any family in ``rope_lens.models.tiny.FAMILIES``: built
    and loaded (native backend) once per session, returned as ``(folder, lm)`` (read-only:
    don't mutate them)."""
    from rope_lens.models import load_model
    from rope_lens.models.tiny import family_model_dir

    root = tmp_path_factory.mktemp("families")
    cache = {}

    def get(name: str):
        if name not in cache:
            folder = family_model_dir(name, root / name)
            cache[name] = (folder, load_model(str(folder), device="cpu"))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-tensor tests (no oversubscription on a shared
    2-core machine). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
