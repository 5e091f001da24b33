"""One rank of the multi-process training test (run by ``torchrun``; see
tests/unit/test_train_distributed.py).

Usage: torchrun --nproc_per_node 2 tests/dist/train_worker.py RUN_DIR DATA_ROOT [STOP_AFTER]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from rope_lens.train.config import ModelConfig, TrainConfig  # noqa: E402

FIXTURE = Path(__file__).parents[1] / "fixtures" / "train"


def config(**kw) -> TrainConfig:
    """A tiny run: 2 micro-batches per step, so 2 processes take one each."""
    base = dict(
        model=ModelConfig(
            vocab_size=384, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64
        ),
        encoding="0.75-rope",
        data_source=str(FIXTURE),
        seq_len=32,
        batch_size=8,
        micro_batch_size=4,
        steps=6,
        lr=3e-3,
        warmup_steps=2,
        eval_every=100,
        eval_tokens=256,
        ckpt_every=3,
        log_every=1,
        eval_lengths=(1,),
    )
    return TrainConfig(**{**base, **kw})


def main() -> int:
    from rope_lens.train.loop import train

    torch.set_num_threads(1)
    run_dir, data_root = Path(sys.argv[1]), Path(sys.argv[2])
    stop_after = int(sys.argv[3]) if len(sys.argv) > 3 else None
    res = train(config(), run_dir, data_root=data_root, progress=False, stop_after=stop_after)
    from accelerate import PartialState

    world = PartialState().num_processes  # the processes that shared each step's micro-batches
    print(f"rank {os.environ.get('RANK')} of {world}: step {res.step} completed {res.completed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
