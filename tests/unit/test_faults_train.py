"""Fault injection for training runs and the Table 2 grid (issue 11): a second run into a busy
folder, rerunning a finished run, a deleted newest checkpoint, SIGTERM mid-run, and a parent
that dies under its `table --jobs N` workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from rope_lens.errors import BusyError, Terminated
from tests.unit.test_train_loop import _cfg


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _train(cfg, run_dir, data_root, **kw):
    from rope_lens.train.loop import train

    return train(cfg, run_dir, data_root=data_root, progress=False, **kw)


def _rows(run_dir, kind):
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


FAST = dict(steps=4, ckpt_every=2, eval_every=100, eval_tokens=128, eval_lengths=(1,))


def test_second_run_into_a_busy_folder_fails_clearly(tmp_path, data_root):
    from rope_lens.lock import folder_lock

    with folder_lock(tmp_path / "run", "train"):
        with pytest.raises(BusyError, match="in use by pid"):
            _train(_cfg(**FAST), tmp_path / "run", data_root)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_finished_run_is_a_noop_and_latest_falls_back(tmp_path, data_root):
    run = tmp_path / "run"
    first = _train(_cfg(**FAST), run, data_root)
    evals, stamp = _rows(run, "eval"), (run / "results.json").stat().st_mtime_ns
    again = _train(_cfg(**FAST), run, data_root)
    assert again.final == first.final and again.completed
    assert _rows(run, "eval") == evals  # no duplicate eval rows
    assert (run / "results.json").stat().st_mtime_ns == stamp
    # "delete step-N to resume from an older checkpoint": latest still names step-4
    import shutil

    from rope_lens.train import checkpoint

    shutil.rmtree(run / "checkpoints" / "step-00000004")
    (run / "results.json").unlink()
    assert checkpoint.find_latest(run).name == "step-00000002"
    resumed = _train(_cfg(**FAST), run, data_root)
    assert resumed.step == 4 and resumed.completed


def test_sigterm_saves_a_checkpoint_at_the_step_end(tmp_path, data_root, monkeypatch):
    """SIGTERM arrives during step 3 (sent from inside the loop, so no timing): the step ends,
    a checkpoint is written although ckpt_every is 100, and the rerun resumes from it."""
    from rope_lens.train import checkpoint
    from rope_lens.train.metrics import MetricsLog

    real = MetricsLog.log

    def log(self, kind, **row):
        if kind == "train" and row["step"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, kind, **row)

    monkeypatch.setattr(MetricsLog, "log", log)
    cfg = _cfg(**{**FAST, "steps": 5, "ckpt_every": 100})
    with pytest.raises(Terminated):
        _train(cfg, tmp_path / "run", data_root)
    assert checkpoint.find_latest(tmp_path / "run").name == "step-00000003"
    monkeypatch.setattr(MetricsLog, "log", real)
    assert _train(cfg, tmp_path / "run", data_root).step == 5
    assert [r["step"] for r in _rows(tmp_path / "run", "train")] == [1, 2, 3, 4, 5]


def test_grid_workers_die_with_their_parent(tmp_path):
    """The parent is SIGKILLed while its worker trains (sleeps): the worker goes too."""
    pid_file = tmp_path / "worker.pid"
    script = textwrap.dedent(
        f"""
        import os, signal, time, multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        from rope_lens.train.table import die_with_parent
        from tests.unit.test_faults_train import _sleeper

        if __name__ == "__main__":
            pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"),
                                       initializer=die_with_parent, initargs=(os.getpid(),))
            pool.submit(_sleeper, {str(pid_file)!r})
            while not os.path.exists({str(pid_file)!r}):
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), *sys.path])}
    proc = subprocess.run([sys.executable, "-c", script], env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    worker = int(pid_file.read_text())
    for _ in range(600):  # the kernel delivers SIGTERM at once; allow a slow, busy machine
        if not _alive(worker):
            break
        import time

        time.sleep(0.1)
    assert not _alive(worker)


def _sleeper(pid_file: str) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    import time

    time.sleep(600)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


def test_full_disk_during_train_is_one_line_and_keeps_the_old_checkpoint(
    tmp_path, data_root, capsys, monkeypatch
):
    """ENOSPC while writing checkpoint 2: `error: ... No space left`, exit 2, step 1 intact."""
    import errno

    from rope_lens import cli
    from rope_lens.train import checkpoint
    from tests.unit.test_train_cli import FIXTURE, TINY

    real = checkpoint.save_checkpoint

    def full(run_dir, step, **kw):
        if step == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(run_dir))
        return real(run_dir, step, **kw)

    monkeypatch.setattr(checkpoint, "save_checkpoint", full)
    extra = ["rope_lens.commands.train"]
    monkeypatch.setattr(cli, "COMMANDS", [c for c in cli.COMMANDS if c not in extra] + extra)
    run = tmp_path / "run"
    argv = ["train", "--data-source", str(FIXTURE), "--data-root", str(data_root), "--quiet"]
    argv += ["--out", str(run), *TINY, "--set=steps=3"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "No space left on device" in lines[0] and "Traceback" not in err
    assert checkpoint.find_latest(run).name == "step-00000001"


def test_orphaned_grid_worker_checkpoints_and_exits(tmp_path, data_root):
    """A real `table --jobs` worker training when its parent is SIGKILLed: it gets SIGTERM,
    saves a checkpoint at the end of its step (ckpt_every is far away) and exits."""
    from rope_lens.train import checkpoint
    from rope_lens.train.data import prepare_data

    cfg = _cfg(**{**FAST, "steps": 100000, "ckpt_every": 100000, "log_every": 1})
    prepare_data(cfg.dataset, cfg.data_source, cfg.model.vocab_size, data_root)
    run = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import json, os, signal, time, multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        from rope_lens.train.config import TrainConfig
        from rope_lens.train.table import _run_cell, die_with_parent

        if __name__ == "__main__":
            pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"),
                                       initializer=die_with_parent, initargs=(os.getpid(),))
            cfg = json.loads({json.dumps(json.dumps(cfg.to_dict()))})
            pool.submit(_run_cell, cfg, {str(run)!r}, {str(data_root)!r}, 1)
            while not os.path.exists({str(run / "metrics.jsonl")!r}):
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), *sys.path])}
    proc = subprocess.run([sys.executable, "-c", script], env=env, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    worker = int((run / ".rope-lens.lock").read_text().split()[1])
    for _ in range(1200):  # bounded wait for the worker's step to end
        if not _alive(worker):
            break
        import time

        time.sleep(0.1)
    assert not _alive(worker)
    assert checkpoint.find_latest(run) is not None
