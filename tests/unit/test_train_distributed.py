"""Training across processes: DDP on 2 CPU processes (gloo, under torchrun) gives the
one-process loss curve with the same global batch and seed, and a run with one rank killed
(SIGKILL) part-way resumes under DDP to the same curve; FSDP2 takes one step on 2 CPU
processes equal to one process's.

Each torchrun start-up costs tens of seconds on a loaded machine, so the module launches twice
in all (:func:`launched`): the killed DDP run, then its resume, which also runs the FSDP step
in the same process group."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.dist import torchrun
from tests.dist import train_worker as worker

ROOT = Path(__file__).resolve().parents[2]


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}


def _torchrun(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = torchrun("tests/dist/train_worker.py", *args)
    assert (proc.returncode == 0) == ok, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """The module's two launches. Rank 1 SIGKILLs itself as step 5 begins: past the checkpoint
    at step 3, with step 4 done and logged, so the resume must throw step 4 away and redo it;
    torchrun then stops rank 0. The relaunch resumes, then runs the FSDP step."""
    tmp = tmp_path_factory.mktemp("train-dist")
    ddp, fsdp, data_root = tmp / "ddp", tmp / "fsdp", tmp / "cache"
    killed = _torchrun(str(ddp), str(data_root), "--kill", "1:5", ok=False)
    before = _losses(ddp)  # read now: the resume truncates the rows after its checkpoint
    finished_early = (ddp / "results.json").exists()
    resumed = _torchrun(str(ddp), str(data_root), "--fsdp", str(fsdp))
    return SimpleNamespace(
        tmp=tmp, ddp=ddp, fsdp=fsdp, data_root=data_root, killed=killed, before=before,
        finished_early=finished_early, resumed=resumed,
    )  # fmt: skip


def test_ddp_two_processes_equal_one_and_resume_after_one_rank_is_killed(launched):
    from rope_lens.train.loop import train

    torch.set_num_threads(1)
    killed, ddp = launched.killed, launched.ddp
    assert "rank 1: SIGKILL before step 5" in killed.stdout, killed.stdout
    assert "SIGKILL" in killed.stderr, killed.stderr[-3000:]  # torchrun's report of rank 1
    assert not launched.finished_early
    before = launched.before
    assert sorted(before) == [1, 2, 3, 4]
    proc = launched.resumed  # relaunched: resumed under DDP from step 3
    # Two ranks of one process group (not two independent one-process runs).
    assert "rank 0 of 2: step 6 completed True" in proc.stdout, proc.stdout
    assert "rank 1 of 2: step 6 completed True" in proc.stdout, proc.stdout
    one = launched.tmp / "one"
    train(worker.config(), one, data_root=launched.data_root, progress=False)
    a, b = _losses(one), _losses(ddp)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    # Exact in principle here: 2 micro-batches, (g0 + g1) / 2 == g0 / 2 + g1 / 2 in floats.
    dev = max(abs(a[s] - b[s]) for s in a)
    redo = max(abs(before[s] - b[s]) for s in before)  # the killed run's steps, redone
    print(f"max |loss(1 process) - loss(2 processes, DDP, rank 1 killed, resumed at 3)| = "
          f"{dev:.3g}; killed run vs resumed run on steps 1-4: {redo:.3g}")  # fmt: skip
    assert dev <= 1e-5, (a, b)
    assert redo <= 1e-5, (before, b)
    # The curve moved: equal curves are not two constant ones.
    assert a[6] < a[1] - 0.05
    res = json.loads((ddp / "results.json").read_text())
    ref = json.loads((one / "results.json").read_text())
    va, vb = ref["final"]["valid@1x"]["loss"], res["final"]["valid@1x"]["loss"]
    assert abs(va - vb) <= 1e-5, (va, vb)


def test_fsdp_step_on_two_cpu_processes_and_its_checkpoint_analyzes(launched):
    """The gemma-2b preset's sharding (a unit per decoder layer; FSDP2, as FSDP1 needs a GPU)
    takes one optimizer step on 2 CPU processes, each with half of the global batch: its
    gathered weights equal one process's step on the whole batch, and the checkpoint
    folder analyzes with ``rope-lens analyze``. Plain RoPE: a 0.75-RoPE model's band-norm
    table has infinite wavelengths (zero frequencies), which the pipeline refuses to save."""
    from safetensors.torch import load_file

    from rope_lens import cli, io
    from tests.dist import fsdp_worker

    torch.set_num_threads(1)
    run, proc = launched.fsdp, launched.resumed
    lines = [x for x in proc.stdout.splitlines() if " of 2: sharded " in x]
    assert len(lines) == 2, proc.stdout
    shard, full = (
        int(v) for v in lines[0].split("sharded ")[1].split(" parameters")[0].split(" of ")
    )
    assert shard < full  # each rank held only part of the weights
    loss2 = float(lines[0].rsplit("loss ", 1)[1])

    cfg = worker.config(fsdp=True, encoding="rope")
    model, make_opt = fsdp_worker.build(cfg)
    loss1 = fsdp_worker.one_step(model, make_opt(model), fsdp_worker.global_batch(cfg))
    assert abs(loss1 - loss2) <= 1e-5, (loss1, loss2)
    saved = load_file(run / "model.safetensors")
    mine = model.state_dict()
    dev = max((saved[k] - mine[k]).abs().max().item() for k in saved)
    print(f"FSDP (2 CPU processes) vs 1 process after one step: loss {abs(loss1 - loss2):.3g}, "
          f"max |weight difference| {dev:.3g}")  # fmt: skip
    assert dev <= 1e-5
    out = launched.tmp / "table"
    argv = ["analyze", "--model", str(run), "--device", "cpu", "--max-len", "24",
            "--limit", "4", "--no-progress", "--threads", "1", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    df, meta = io.load_table(out / "band_norm.parquet")
    assert len(df) and meta["world_size"] == 1
