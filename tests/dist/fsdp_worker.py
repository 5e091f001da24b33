"""One rank of the FSDP test (run by ``torchrun``; see tests/unit/test_train_distributed.py):
one optimizer step of the gemma-2b preset's sharding (FSDP2 units per decoder layer, on CPU
with gloo), each rank taking half of the global batch, then a checkpoint of the full weights.

Usage: torchrun --nproc_per_node 2 tests/dist/fsdp_worker.py RUN_DIR DATA_ROOT

:func:`run` also runs inside another launch's process group (train_worker.py --fsdp DIR), so
the tests share one torchrun start-up between DDP and FSDP.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from tests.dist import say  # noqa: E402
from tests.dist.train_worker import config  # noqa: E402


def one_step(model, optimizer, batch: torch.Tensor) -> float:
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def build(cfg):
    """The loop's model and optimizer, from the run's seed."""
    from rope_lens.train.encodings import get_encoding
    from rope_lens.train.loop import _optimizer
    from rope_lens.train.model import build_model

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, get_encoding(cfg.encoding, cfg.theta), cfg.max_eval_len)
    matrices = {n for n, p in model.named_parameters() if p.ndim >= 2}
    return model, lambda m: _optimizer(m, cfg, matrices)


def global_batch(cfg) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.randint(
        3, cfg.model.vocab_size, (cfg.micro_batch_size * 2, cfg.seq_len), generator=g
    )


def run(run_dir: Path, data_root: Path) -> None:
    """The FSDP step and its checkpoint, in the current process group (made here if none)."""
    import torch.distributed as dist

    from rope_lens.train import checkpoint as ckpt_io
    from rope_lens.train import distributed as train_dist
    from rope_lens.train.data import prepare_data

    torch.set_num_threads(1)
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    cfg = config(fsdp=True, encoding="rope")  # see the test: 0.75-rope tables hold inf wavelengths
    model, make_opt = build(cfg)
    model = train_dist.shard(model)
    optimizer = make_opt(model)
    n_shard = sum(p.to_local().numel() for p in model.parameters())
    n_full = sum(p.numel() for p in model.parameters())
    mine = global_batch(cfg).chunk(world)[rank]  # equal halves: mean of means = global mean
    loss = torch.tensor(one_step(model, optimizer, mine))
    dist.all_reduce(loss)
    full = train_dist.full_state_dict(model)
    if rank == 0:
        data = prepare_data(cfg.dataset, cfg.data_source, cfg.model.vocab_size, data_root)
        from rope_lens.train.encodings import get_encoding
        from rope_lens.train.model import build_model  # an unsharded shell to save_pretrained

        shell = build_model(cfg.model, get_encoding(cfg.encoding, cfg.theta), cfg.max_eval_len)
        ckpt_io.save_checkpoint(
            run_dir, 1, model=shell, tokenizer=data.tokenizer, trainer_state={},
            info={"train_config": cfg.to_dict()}, state_dict=full,
        )  # fmt: skip
    dist.barrier()
    say(f"rank {rank} of {world}: sharded {n_shard} of {n_full} parameters, "
        f"loss {float(loss) / world:.8f}")  # fmt: skip


def main() -> int:
    import torch.distributed as dist

    run(Path(sys.argv[1]), Path(sys.argv[2]))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
