"""Training across processes: DDP on 2 CPU processes (gloo, under torchrun) gives the
one-process loss curve with the same global batch and seed, and a run stopped part-way under
DDP resumes to the same curve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.dist import train_worker as worker

ROOT = Path(__file__).resolve().parents[2]


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(ROOT / "tests/dist/train_worker.py"), *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_ddp_two_processes_equal_one(tmp_path):
    from rope_lens.train.loop import train

    torch.set_num_threads(1)
    data_root = tmp_path / "cache"
    one = tmp_path / "one"
    train(worker.config(), one, data_root=data_root, progress=False)
    ddp = tmp_path / "ddp"
    _torchrun(str(ddp), str(data_root), "3")  # stopped after 3 of 6 steps (checkpoint at 3)
    assert sorted(_losses(ddp)) == [1, 2, 3]
    proc = _torchrun(str(ddp), str(data_root))  # resumed under DDP from the checkpoint
    # Two ranks of one process group (not two independent one-process runs).
    assert "rank 0 of 2: step 6 completed True" in proc.stdout, proc.stdout
    assert "rank 1 of 2: step 6 completed True" in proc.stdout, proc.stdout
    a, b = _losses(one), _losses(ddp)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    # Exact in principle here: 2 micro-batches, (g0 + g1) / 2 == g0 / 2 + g1 / 2 in floats.
    dev = max(abs(a[s] - b[s]) for s in a)
    print(f"max |loss(1 process) - loss(2 processes, DDP, resumed at 3)| = {dev:.3g}")
    assert dev <= 1e-5, (a, b)
    # The curve moved: equal curves are not two constant ones.
    assert a[6] < a[1] - 0.05
    res = json.loads((ddp / "results.json").read_text())
    ref = json.loads((one / "results.json").read_text())
    va, vb = ref["final"]["valid@1x"]["loss"], res["final"]["valid@1x"]["loss"]
    assert abs(va - vb) <= 1e-5, (va, vb)
