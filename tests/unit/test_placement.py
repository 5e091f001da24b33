"""Models larger than one device (rope_lens.models.placement): a split forced with
accelerate's ``max_memory`` (part in CPU RAM, the rest offloaded to disk) gives the tables of
the unsplit model; a model that cannot fit fails in one line naming --offload."""

from __future__ import annotations

import pytest
import torch

from rope_lens.analyses import band_norms
from rope_lens.analyses import heads as head_scores
from rope_lens.errors import InputError
from rope_lens.models import load_model, placement
from tests.helpers import one_batch


def test_split_over_cpu_and_disk_equals_unsplit(tiny_dirs, tmp_path):
    torch.set_num_threads(1)
    folder = tiny_dirs["llama"]
    whole = load_model(str(folder), device="cpu")
    size = placement.weight_bytes(folder, torch.float32)
    assert size is not None
    # About half the weights fit in "CPU RAM"; accelerate offloads the rest to disk.
    split = load_model(str(folder), device="cpu", offload=True, max_memory={"cpu": size // 2})
    where = set(split.hf_model.hf_device_map.values())
    assert where == {"cpu", "disk"}, split.hf_model.hf_device_map
    assert split.device == torch.device("cpu")
    batch = one_batch(whole, ["rotary positions, split over devices", "a second text"], 24)
    layers = list(range(whole.n_layers))
    for run in (band_norms.run, head_scores.run):
        a = run(whole, [batch], layers, progress=False)
        b = run(split, [batch], layers, progress=False)
        cols = [c for c in a.columns if a[c].dtype.kind == "f"]
        dev = max(float((a[c] - b[c]).abs().max()) for c in cols)
        print(f"{run.__module__}: max |split - unsplit| = {dev:.3g}")
        assert dev <= 1e-6, dev
        assert a.drop(columns=cols).equals(b.drop(columns=cols))


def test_too_big_is_one_line_naming_offload(tiny_dirs, monkeypatch):
    monkeypatch.setattr(placement, "available_bytes", lambda dev: (1000, "CPU RAM"))
    with pytest.raises(InputError) as err:
        load_model(str(tiny_dirs["llama"]), device="cpu")
    msg = str(err.value)
    assert "\n" not in msg and "--offload" in msg and "GiB free" in msg, msg
    assert msg.startswith(f"{tiny_dirs['llama']} needs "), msg


def test_cli_offload_flag_gives_the_same_table(tiny_dirs, tmp_path):
    from rope_lens import cli, io

    argv = ["analyze", "--model", str(tiny_dirs["llama"]), "--device", "cpu", "--max-len", "24",
            "--limit", "3", "--no-progress", "--threads", "1"]  # fmt: skip
    assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert cli.main([*argv, "--offload", "--out", str(tmp_path / "b")]) == 0
    a, meta_a = io.load_table(tmp_path / "a" / "band_norm.parquet")
    b, meta_b = io.load_table(tmp_path / "b" / "band_norm.parquet")
    assert a.equals(b) and meta_a["identity"] == meta_b["identity"]
