"""Workers for the multi-process tests (run under torchrun by tests/unit/test_*distributed*)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def say(line: str) -> None:
    """One whole line to stdout in one write: ranks share the pipe, and ``print`` writes the
    text and its newline separately, so two ranks' lines could run together."""
    sys.stdout.flush()
    os.write(1, (line + "\n").encode())


def torchrun(
    script: str, *args: str, nproc: int = 2, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``script`` on ``nproc`` CPU processes (gloo) with torchrun, in its own process
    group: on a timeout the whole group is killed, so no worker is left waiting at a
    rendezvous."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(nproc), str(ROOT / script), *args]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(
            f"torchrun {script} timed out after {timeout} s:\n{err[-3000:]}"
        ) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
