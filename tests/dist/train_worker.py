"""One rank of the multi-process training test (run by ``torchrun``; see
tests/unit/test_train_distributed.py).

Usage: torchrun --nproc_per_node 2 tests/dist/train_worker.py RUN_DIR DATA_ROOT [STOP_AFTER]
       [--kill RANK:STEP] [--fsdp FSDP_RUN_DIR]

``--fsdp DIR``: after training, the FSDP step of fsdp_worker.py in the same process group
(one torchrun start-up for both tests).

``--kill 1:5``: rank 1 SIGKILLs itself as step 5 begins (no handler, no checkpoint, no goodbye
to the process group: what an OOM kill or a lost node does to one worker).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from rope_lens.train.config import TrainConfig  # noqa: E402
from tests.dist import say  # noqa: E402
from tests.helpers import tiny_train_config  # noqa: E402


def config(**kw) -> TrainConfig:
    """A tiny run: 2 micro-batches per step, so 2 processes take one each."""
    base = dict(steps=6, eval_every=100, eval_tokens=256, ckpt_every=3, eval_lengths=(1,))
    return tiny_train_config(**{**base, **kw})


def kill_at(rank: int, step: int) -> None:
    """Make ``rank`` SIGKILL itself when it is about to take ``step`` (1-based)."""
    from rope_lens.train import loop

    real = loop._step

    def step_or_die(run, fwd):
        if run.accelerator.process_index == rank and run.step + 1 == step:
            say(f"rank {rank}: SIGKILL before step {step}")
            os.kill(os.getpid(), signal.SIGKILL)
        return real(run, fwd)

    loop._step = step_or_die  # _train looks _step up in the module at every step


def main() -> int:
    from rope_lens.train.loop import train

    torch.set_num_threads(1)
    argv = sys.argv[1:]
    if "--kill" in argv:
        at = argv.index("--kill")
        rank, step = (int(x) for x in argv[at + 1].split(":"))
        kill_at(rank, step)
        del argv[at : at + 2]
    fsdp_dir = None
    if "--fsdp" in argv:
        at = argv.index("--fsdp")
        fsdp_dir = Path(argv[at + 1])
        del argv[at : at + 2]
    run_dir, data_root = Path(argv[0]), Path(argv[1])
    stop_after = int(argv[2]) if len(argv) > 2 else None
    res = train(config(), run_dir, data_root=data_root, progress=False, stop_after=stop_after)
    from accelerate import PartialState

    world = PartialState().num_processes  # the processes that shared each step's micro-batches
    say(f"rank {os.environ.get('RANK')} of {world}: step {res.step} completed {res.completed}")
    if fsdp_dir is not None:
        from tests.dist import fsdp_worker

        fsdp_worker.run(fsdp_dir, data_root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
