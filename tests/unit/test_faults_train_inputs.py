"""Issue 21, the training side: a run that cannot silently mix data or settings, a table that
never aggregates cells trained differently, metrics that survive a kill during a resume, and
one-line errors for bad settings, damaged results and pickled trainer states.

Each test is a case the issue reproduced on the code before it (each fails there).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rope_lens import cli
from rope_lens.errors import CheckpointError
from rope_lens.train.config import CPU
from tests.helpers import TRAIN_FIXTURE, fails_in_one_line, tiny_train_config

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(steps=4, ckpt_every=2, eval_every=100, eval_tokens=128, eval_lengths=(1,))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _train(cfg, run_dir, data_root, **kw):
    from rope_lens.train.loop import train

    return train(cfg, run_dir, data_root=data_root, progress=False, **kw)


_one_error = fails_in_one_line


def test_resume_on_changed_training_text_is_refused(tmp_path, data_root):
    """Case 4: stopped at step 2, one character of the training text changed: the tokenizer is
    retrained on the new text, so resuming would read token ids with other meanings."""
    source = Path(shutil.copytree(TRAIN_FIXTURE, tmp_path / "data"))
    cfg = tiny_train_config(**FAST, data_source=str(source))
    assert _train(cfg, tmp_path / "run", data_root, stop_after=2).step == 2
    text = (source / "wiki_train.txt").read_text()
    (source / "wiki_train.txt").write_text(text.replace("e", "a", 1))
    with pytest.raises(CheckpointError, match="trained on other data"):
        _train(cfg, tmp_path / "run", data_root)


@pytest.mark.parametrize(
    "setting",
    [
        "lr=-1", "lr=0", "lr=nan", "beta1=2", "beta2=1", "grad_clip=-1", "grad_clip=0",
        "weight_decay=-1", "warmup_steps=-1", "min_lr_ratio=-1", "min_lr_ratio=2",
        "model.init_std=-1", "micro_batch_size=0", "keep_checkpoints=0",
    ],
)  # fmt: skip
def test_every_setting_is_validated_before_the_first_step(capsys, tmp_path, setting):
    """Case 6 and the torch tracebacks: grad_clip=-1 trained by gradient ascent and was saved
    as a completed run; lr=-1, beta1=2, model.init_std=-1 failed inside torch."""
    name = setting.split("=")[0]
    out = tmp_path / "run"
    argv = ["train", "--data-source", str(TRAIN_FIXTURE), "--out", str(out), "--quiet"]
    _one_error(capsys, [*argv, "--data-root", str(tmp_path / "cache"), "--set", setting], name)
    assert not out.exists()


def _finished(out: Path, seed: int, steps: int, fingerprint: str = "f0") -> None:
    from rope_lens.train.table import Cell

    cell = Cell("wiki", "rope", seed)
    cfg = dataclasses.replace(CPU, encoding="rope", seed=seed, steps=steps)
    final = {"valid@1x": {"loss": 5.7, "ppl": 300.0 + seed, "tokens": 10, "seq_len": 128}}
    res = {"step": steps, "final": final, "train_config": cfg.to_dict()}
    res["data"] = {"fingerprint": fingerprint}
    cell.run_dir(out).mkdir(parents=True)
    (cell.run_dir(out) / "results.json").write_text(json.dumps(res))


@pytest.mark.parametrize("collect_only", [True, False])
def test_table_never_aggregates_cells_trained_with_other_settings(capsys, tmp_path, collect_only):
    """Case 5: seed 0 trained with steps=6, seed 1 with steps=12: "304.8 ± 58.9 (n=2)" and
    exit 0 under --collect-only; exit 2 but table.md written without it."""
    _finished(tmp_path, 0, steps=6)
    _finished(tmp_path, 1, steps=12)
    argv = ["table", "--datasets", "wiki", "--encodings", "rope", "--seeds", "0", "1"]
    argv += ["--set", "steps=12", "--out", str(tmp_path)]
    _one_error(capsys, argv + (["--collect-only"] if collect_only else []), "steps: checkpoint 6")
    assert not (tmp_path / "table.md").exists() and not (tmp_path / "table.csv").exists()


def test_table_never_aggregates_cells_trained_on_other_data(capsys, tmp_path):
    _finished(tmp_path, 0, steps=12, fingerprint="f0")
    _finished(tmp_path, 1, steps=12, fingerprint="f1")
    argv = ["table", "--datasets", "wiki", "--encodings", "rope", "--seeds", "0", "1"]
    argv += ["--set", "steps=12", "--out", str(tmp_path), "--collect-only"]
    _one_error(capsys, argv, "trained on other wiki data")
    assert not (tmp_path / "table.md").exists()


@pytest.mark.parametrize(
    "text",
    [
        '{"step": 5, "final": {"valid@1x": 3.0}}',
        '{"step": 5, "final": []}',
        '{"step": "5", "final": {"valid@1x": {"ppl": 3.0}}}',
        '{"step": 5, "final": {"valid@1x": {"ppl": 3.0}}, "train_config": [1]}',
    ],
)
def test_damaged_results_json_is_one_line(capsys, tmp_path, text):
    """Traceback list: `table --collect-only` with a damaged results.json (KeyError/TypeError)."""
    _finished(tmp_path, 0, steps=12)
    path = tmp_path / "wiki" / "rope" / "seed0" / "results.json"
    path.write_text(text)
    argv = ["table", "--datasets", "wiki", "--encodings", "rope", "--seeds", "0"]
    _one_error(
        capsys, [*argv, "--set", "steps=12", "--out", str(tmp_path), "--collect-only"], "unreadable"
    )


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from rope_lens.train.metrics import MetricsLog

    run_dir, step, kill_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    n = 0

    def trace(frame, event, arg):
        global n
        if event == "line" and frame.f_code.co_filename.endswith(("metrics.py", "atomic.py")):
            n += 1
            if n == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return trace

    sys.settrace(trace)
    MetricsLog(run_dir).truncate(step)
    sys.settrace(None)
    print(n)
    """
)


def test_a_kill_at_any_point_of_a_resume_keeps_every_row_before_the_checkpoint(tmp_path):
    """Case 9: resuming deleted metrics.jsonl / metrics.csv / eval.csv and rewrote them row by
    row; a SIGKILL then and the next resume left 0 of the rows before the checkpoint. Here the
    resume's truncation is SIGKILLed at evenly spread points of its own execution, then the
    next resume truncates again: every row up to the checkpoint is there, once."""
    from rope_lens.train.metrics import MetricsLog

    base = tmp_path / "base"
    log = MetricsLog(base)
    for step in range(1, 156):
        log.log("train", step=step, loss=1.0 / step, lr=1e-3)
        if step % 10 == 0:
            log.log("eval", step=step, split="valid", length_multiple=1, loss=2.0, ppl=7.4)
    want = [r for r in log.rows() if r["step"] <= 120]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}

    def run(folder: Path, kill_at: int) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-c", KILLER, str(folder), "120", str(kill_at)]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)

    probe = run(Path(shutil.copytree(base, tmp_path / "probe")), 0)
    assert probe.returncode == 0, probe.stderr
    total = int(probe.stdout)
    for kill_at in sorted({1 + total * i // 12 for i in range(12)}):
        folder = Path(shutil.copytree(base, tmp_path / f"k{kill_at}"))
        assert run(folder, kill_at).returncode == -signal.SIGKILL
        again = MetricsLog(folder)
        again.truncate(120)  # the next resume
        assert again.rows() == want, kill_at
        csv_steps = [
            int(line.split(",")[0])
            for line in (folder / "metrics.csv").read_text().splitlines()[1:]
        ]
        assert csv_steps == list(range(1, 121)), kill_at


def test_a_pickled_trainer_state_is_one_line_naming_the_cause(tmp_path, data_root, capsys):
    """Also-list: a pickled trainer_state.pt relayed torch's 4-line "retry with
    weights_only=False" (advice rope-lens must never follow)."""
    import datetime

    import torch

    from rope_lens.train import checkpoint

    cfg = tiny_train_config(**FAST)
    assert _train(cfg, tmp_path / "run", data_root, stop_after=2).step == 2
    ckpt = checkpoint.find_latest(tmp_path / "run")
    state = {"format": 1, "when": datetime.datetime(2025, 1, 1)}  # a pickled object
    torch.save(state, ckpt / "trainer_state.pt")
    manifest = json.loads((ckpt / "manifest.json").read_text())
    path = ckpt / "trainer_state.pt"
    manifest[path.name] = {"size": path.stat().st_size, "sha256": checkpoint._sha256(path)}
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError) as err:
        checkpoint.load_trainer_state(ckpt)
    message = str(err.value)
    assert "pickled Python objects" in message and "\n" not in message
    assert "weights_only=False" not in message


def test_a_refused_training_run_leaves_no_run_folder(capsys, tmp_path):
    """Also-list (a refused run leaves nothing behind), for `train`: the run folder and its
    lock were made before the data source was found missing."""
    out = tmp_path / "runs" / "new"
    argv = ["train", "--data-source", str(tmp_path / "no-such-data"), "--out", str(out)]
    assert cli.main([*argv, "--data-root", str(tmp_path / "cache"), "--quiet"]) == 2
    assert "error: " in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
