"""Sharded training off the GPU: FSDP2 (``torch.distributed.fsdp.fully_shard``) on CPU.

The ``gemma-2b`` preset shards with FSDP through accelerate (``FullyShardedDataParallelPlugin``:
one unit per decoder layer, ``FULL_STATE_DICT`` checkpoints). That is FSDP1, which in torch
2.13 refuses to run without an accelerator ("FSDP needs a non-CPU accelerator device"), and
accelerate applies its FSDP plugin only on GPU distributed types. FSDP2 shards on CPU with
gloo, with the same layout: every decoder layer is a unit, then the root; the full weights are
gathered for a checkpoint (:func:`full_state_dict`) in the form ``checkpoint.save_checkpoint``
takes (``state_dict=``), so the folder loads in ``rope-lens analyze`` like any other.

Used by the 2-process CPU test (tests/unit/test_train_distributed.py) to prove the sharded step
and its checkpoint; the GPU path of ``rope_lens.train.loop`` is unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

DECODER_LAYERS = ("GemmaDecoderLayer",)  # what the gemma-2b preset's FSDP plugin wraps


def shard(model: torch.nn.Module, layer_names: tuple[str, ...] = DECODER_LAYERS) -> Any:
    """Shard ``model`` over the current process group, one unit per decoder layer then the
    root, on this rank's device type (``cpu`` with gloo, ``cuda`` with nccl)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    kind = "cuda" if dist.get_backend() == "nccl" else "cpu"
    mesh = init_device_mesh(kind, (dist.get_world_size(),))
    units = [m for m in model.modules() if type(m).__name__ in layer_names]
    if not units:
        raise ValueError(f"no {', '.join(layer_names)} module to shard in {type(model).__name__}")
    for unit in units:
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights on the CPU (every rank takes part; every rank gets them)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    return {k: v for k, v in full.items() if isinstance(v, torch.Tensor)}
