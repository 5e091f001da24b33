"""The training loop on CPU: it learns, resumes exactly, and never leaves a half checkpoint."""

import json
from pathlib import Path

import pytest
import torch

from rope_lens.errors import CheckpointError, InputError
from rope_lens.train.config import TrainConfig
from tests.helpers import TRAIN_FIXTURE as FIXTURE
from tests.helpers import tiny_train_config


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=12, eval_every=6, eval_tokens=512, ckpt_every=4, eval_lengths=(1, 2))
    return tiny_train_config(**{**base, **kw})


# Tiny matmuls gain nothing from threads; the shared fixture (tests/conftest.py) keeps this
# module on one torch thread, as the local autouse copy did.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _train(cfg, run_dir, data_root, **kw):
    from rope_lens.train.loop import train

    return train(cfg, run_dir, data_root=data_root, progress=False, **kw)


def _losses(run_dir):
    rows = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data_root):
    run = tmp_path_factory.mktemp("full") / "run"
    return _train(_cfg(), run, data_root)


class TestLearning:
    def test_validation_loss_drops(self, full_run, data_root):
        from rope_lens.train.data import prepare_data
        from rope_lens.train.encodings import get_encoding
        from rope_lens.train.evaluate import perplexity
        from rope_lens.train.model import build_model

        cfg = _cfg()
        torch.manual_seed(cfg.seed)
        untrained = build_model(cfg.model, get_encoding(cfg.encoding), 64)
        data = prepare_data("wiki", str(FIXTURE), 384, data_root)
        before = perplexity(untrained, data.streams["valid"], 32, 512, micro_batch_tokens=128)
        after = full_run.final["valid@1x"]
        assert after["loss"] < before["loss"] - 0.3
        assert set(full_run.final) == {"valid@1x", "valid@2x"}

    def test_outputs(self, full_run):
        run = full_run.run_dir
        for name in (
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "metrics.csv",
            "eval.csv",
            "results.json",
        ):
            assert (run / name).is_file(), name
        assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == [
            "step-00000008",
            "step-00000012",
        ]
        assert sorted(_losses(run)) == list(range(1, 13))


class TestResume:
    def test_kill_and_resume_reproduces_curve(self, full_run, tmp_path, data_root):
        run = tmp_path / "run"
        first = _train(_cfg(), run, data_root, stop_after=10)  # "killed" after step 10
        assert not first.completed and max(_losses(run)) == 10
        resumed = _train(_cfg(), run, data_root)  # restarts from the step-8 checkpoint
        want, got = _losses(full_run.run_dir), _losses(run)
        assert sorted(got) == sorted(want)
        for step in want:
            assert got[step] == pytest.approx(want[step], abs=1e-6, rel=0), step
        assert resumed.final["valid@1x"]["loss"] == pytest.approx(
            full_run.final["valid@1x"]["loss"], abs=1e-6
        )

    def test_sigkill_mid_checkpoint_then_resume(self, full_run, tmp_path, data_root):
        """A real hard kill (SIGKILL) half way through writing the step-8 checkpoint: no
        half-written checkpoint is ever visible, and the resumed run (from step 4) still
        reproduces the uninterrupted loss curve."""
        import os
        import signal
        import subprocess
        import sys

        from rope_lens.train import checkpoint

        run = tmp_path / "run"
        child = f"""
import os, signal, torch
torch.set_num_threads(1)
from rope_lens.train import checkpoint
from rope_lens.train.config import TrainConfig
from rope_lens.train.loop import train
real = torch.save
def save(obj, path, *a, **k):
    real(obj, path, *a, **k)
    if obj.get("step") == 8:  # trainer state of step 8 written, manifest not yet
        os.kill(os.getpid(), signal.SIGKILL)
checkpoint.torch.save = save
train(TrainConfig.from_dict({_cfg().to_dict()!r}), {str(run)!r}, data_root={str(data_root)!r},
      progress=False)
"""
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
        assert [p.name for p in (run / "checkpoints").glob(".tmp-*")]  # the half-written one
        assert checkpoint.find_latest(run).name == "step-00000004"
        assert not list((run / "checkpoints").glob(".tmp-*"))  # cleaned up on resume
        _train(_cfg(), run, data_root)
        want, got = _losses(full_run.run_dir), _losses(run)
        assert sorted(got) == sorted(want)
        for step in want:
            assert got[step] == pytest.approx(want[step], abs=1e-6, rel=0), step

    def test_interrupted_save_leaves_old_checkpoint(self, tmp_path, data_root, monkeypatch):
        from rope_lens.train import checkpoint

        run = tmp_path / "run"
        _train(_cfg(steps=8), run, data_root, stop_after=4)
        real_save = torch.save

        def dying_save(*args, **kwargs):  # dies half way through writing step 8
            real_save(*args, **kwargs)
            raise KeyboardInterrupt

        monkeypatch.setattr(checkpoint.torch, "save", dying_save)
        with pytest.raises(KeyboardInterrupt):
            _train(_cfg(steps=8), run, data_root)
        monkeypatch.undo()
        names = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert names == ["latest", "step-00000004"]
        assert checkpoint.find_latest(run).name == "step-00000004"
        assert _train(_cfg(steps=8), run, data_root).completed

    def test_corrupt_checkpoint(self, tmp_path, data_root):
        run = tmp_path / "run"
        _train(_cfg(steps=8), run, data_root, stop_after=4)
        weights = run / "checkpoints" / "step-00000004" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-100])
        with pytest.raises(CheckpointError, match="corrupt"):
            _train(_cfg(steps=8), run, data_root)

    def test_mismatched_checkpoint(self, tmp_path, data_root):
        run = tmp_path / "run"
        _train(_cfg(steps=8), run, data_root, stop_after=4)
        with pytest.raises(CheckpointError, match="different run.*encoding"):
            _train(_cfg(steps=8, encoding="nope"), run, data_root)
        with pytest.raises(CheckpointError, match="different run.*steps"):  # cosine schedule
            _train(_cfg(steps=9), run, data_root)
        with pytest.raises(InputError, match="already has checkpoints"):
            _train(_cfg(steps=8), run, data_root, resume=False)

    def test_missing_data_cache(self, tmp_path):
        with pytest.raises(InputError, match="missing"):
            _train(_cfg(), tmp_path / "run", tmp_path / "empty", build_data=False)


class TestAnalysisLoader:
    """A trained run folder is an analysis target: ``load_model("./runs/NAME")`` rotates with the
    trained frequencies. Reversed has no native HF rope type, so only the ``rope_lens_inv_freq``
    override makes this pass (a plain HF load would use the full RoPE vector)."""

    def test_load_model_uses_trained_frequencies(self, tmp_path, data_root):
        from rope_lens.models import load_model
        from rope_lens.train.encodings import get_encoding
        from rope_lens.train.model import load_trained

        run = tmp_path / "reversed"
        cfg = _cfg(encoding="0.75-rope-reversed", steps=2, ckpt_every=2, eval_lengths=(1,))
        _train(cfg, run, data_root)
        want = get_encoding("0.75-rope-reversed").inv_freq(16)
        loaded = load_model(str(run), device="cpu", dtype="float32")
        for spec in loaded.rope.layer_specs:
            torch.testing.assert_close(spec.inv_freq.double(), want)
        buf = loaded.hf_model.model.rotary_emb.inv_freq
        torch.testing.assert_close(buf.double(), want.to(buf.dtype).double())
        trained, _ = load_trained(run)
        ids = torch.randint(3, 384, (1, 20))
        with torch.no_grad():
            torch.testing.assert_close(
                loaded.hf_model(input_ids=ids).logits, trained(input_ids=ids).logits
            )


def test_metrics_log_survives_a_torn_last_line(tmp_path):
    """A kill mid-write leaves half a JSON line: resuming drops it instead of crashing."""
    from rope_lens.train.metrics import MetricsLog

    log = MetricsLog(tmp_path)
    log.log("train", step=1, loss=2.0)
    log.log("train", step=2, loss=1.5)
    with log.jsonl.open("a") as f:
        f.write('{"kind": "train", "step": 3, "lo')
    assert [r["step"] for r in log.rows()] == [1, 2]
    log.truncate(1)
    assert [r["step"] for r in log.rows()] == [1]
