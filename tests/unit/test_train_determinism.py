"""``--deterministic`` training: one CPU thread and torch's deterministic algorithms, so the same
seed gives the same numbers whatever thread count the process started with; the thread count a
run used is recorded; checkpoints from before the switch existed still resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rope_lens.errors import CheckpointError
from rope_lens.train.config import TrainConfig
from tests.helpers import tiny_train_config


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    torch.use_deterministic_algorithms(False)


def _run(tmp_path, name, threads, **kw):
    from rope_lens.train.loop import train

    torch.set_num_threads(threads)
    cfg = tiny_train_config(steps=4, eval_every=4, eval_tokens=256, ckpt_every=4, **kw)
    out = train(cfg, tmp_path / name, data_root=tmp_path / "cache", progress=False)
    return out, json.loads((tmp_path / name / "results.json").read_text())


def test_deterministic_runs_agree_whatever_the_thread_count(tmp_path, restore_threads):
    a, info_a = _run(tmp_path, "a", 2, deterministic=True)
    b, info_b = _run(tmp_path, "b", 1, deterministic=True)
    assert info_a["threads"] == info_b["threads"] == 1  # the switch fixed it
    assert a.final == b.final  # bit-identical validation losses
    _, info = _run(tmp_path, "c", 2)
    assert info["threads"] == 2 and info["train_config"]["deterministic"] is False


def test_a_checkpoint_from_before_the_switch_resumes():
    """Saved configs without ``deterministic`` read it as its default (the old behaviour)."""
    from rope_lens.train.loop import _check_resume

    cfg = TrainConfig()
    old = json.loads(json.dumps(cfg.to_dict()))
    del old["deterministic"]
    _check_resume(old, cfg, Path("checkpoint-4"))  # no CheckpointError
    with pytest.raises(CheckpointError, match="deterministic"):
        _check_resume(old, TrainConfig(deterministic=True), Path("checkpoint-4"))
