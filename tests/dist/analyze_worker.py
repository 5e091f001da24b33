"""One rank of the data-parallel analysis test (run by ``torchrun``; see
tests/unit/test_distributed.py). Runs the real CLI for several analyses, then a resume after an
interrupt, each into ``OUT/<name>``.

Usage: torchrun --nproc_per_node 2 tests/dist/analyze_worker.py MODEL PROMPTS OUT
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)

from rope_lens import cli, distributed  # noqa: E402
from tests.dist import say  # noqa: E402

RUNS = {
    "band-norm": ["--analysis", "band-norm"],
    "heads": ["--analysis", "heads"],
    "ablation": ["--analysis", "ablation", "--band", "0:2", "--ablation", "mean"],
    "massive-values": ["--analysis", "massive-values"],  # a running max besides the sums
}


def common(model: str, prompts: str) -> list[str]:
    return [
        "--model", model, "--prompts", prompts, "--device", "cpu", "--batch-size", "2",
        "--max-len", "24", "--no-progress", "--threads", "1",
    ]  # fmt: skip


def resume_run(model: str, prompts: str, out: Path) -> None:
    """Band norms interrupted after a rank-dependent number of its own batches (each rank
    checkpoints every batch), then rerun: each rank must resume from its own shard."""
    from rope_lens import extract

    real = extract.run_batches
    stop_after = (
        2 - distributed.rank()
    )  # rank 0 stops after 2 of its 3 batches, rank 1 after 1 of 2

    def interrupted(*args, after_batch=None, **kw):
        def after(done: int) -> None:
            after_batch(done)
            if done >= stop_after:
                raise KeyboardInterrupt

        return real(*args, after_batch=after, **kw)

    argv = ["analyze", *common(model, prompts), "--out", str(out), "--checkpoint-every", "0.001"]
    extract.run_batches = interrupted
    try:
        cli.main(argv)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        extract.run_batches = real
    ckpt = out / f".band_norm.partial.rank{distributed.rank()}-of-2.safetensors"
    say(f"rank {distributed.rank()} checkpoint kept: {ckpt.exists()}")
    distributed.barrier()
    assert cli.main(argv) == 0
    say(f"rank {distributed.rank()} checkpoint after resume: {ckpt.exists()}")


def main() -> int:
    model, prompts, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    for name, extra in RUNS.items():
        code = cli.main(["analyze", *common(model, prompts), *extra, "--out", str(out / name)])
        assert code == 0, (name, code)
        say(f"{name}: rank {distributed.rank()} ran {distributed.SHARDED['batches']} batches")
        distributed.SHARDED["batches"] = 0
    resume_run(model, prompts, out / "resume")
    return 0


if __name__ == "__main__":
    sys.exit(main())
