"""Data-parallel runs on ``torch.distributed``: the only module that knows about it.

Launch any analysis under ``torchrun --nproc_per_node N -m rope_lens.cli analyze ...`` or
``accelerate launch --num_processes N -m rope_lens.cli analyze ...``: both set ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, which :func:`init` reads
(``nccl`` when CUDA is there, ``gloo`` on CPU). Without those variables everything here is a
no-op and a run is the ordinary one-process run.

How a streaming analysis splits (``rope_lens.extract.run_batches``):

- each process reads a disjoint shard of the token batches: batch ``i`` goes to rank
  ``i % world`` (:func:`shard`);
- at the end of each pass the reducers are merged with the checkpoint protocol they already
  have (``rope_lens.resume.Resumable``): ``state()`` on every rank, tensors summed with
  ``all_reduce(SUM)`` and counters summed exactly, then ``load_state`` of the total on every
  rank (:func:`merge`), so every rank holds the one-process result;
- rank 0 alone writes the table and sidecar (:func:`is_main`), which records ``world_size``;
- each rank checkpoints its own shard (:func:`per_rank`), so a killed run resumes per shard.

A loop is sharded only when every consumer of its batches can be merged (:func:`mergeable`);
anything else (single-batch views, passkey, analyses whose reducers have no ``state()``) runs
whole on every rank, which is slower but never wrong.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch

T = TypeVar("T")

_STARTED_HERE = False


def env_world() -> int:
    """World size asked for by the launcher's environment (1 without a launcher)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def active() -> bool:
    """True when a process group with more than one process is running."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if active() else 0


def world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init(device: str | None = None, timeout_s: float = 1800.0) -> bool:
    """Join the process group the launcher describes (idempotent); True when distributed.

    ``nccl`` when CUDA is available and ``device`` is not ``cpu``, ``gloo`` otherwise
    (``ROPE_LENS_DIST_BACKEND`` overrides). On CUDA each process takes GPU ``LOCAL_RANK``
    (modulo the GPU count) as its current device, so ``--device auto`` / ``cuda`` means "this
    rank's GPU".
    """
    global _STARTED_HERE
    import torch.distributed as dist

    if env_world() <= 1 or not dist.is_available():
        return False
    if dist.is_initialized():
        return active()
    use_cuda = torch.cuda.is_available() and (device is None or not str(device).startswith("cpu"))
    if use_cuda:  # more processes than GPUs (a check on one GPU) share them round-robin
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local % torch.cuda.device_count())
    # ROPE_LENS_DIST_BACKEND=gloo: several processes on one GPU (nccl refuses a shared GPU).
    backend = os.environ.get("ROPE_LENS_DIST_BACKEND") or ("nccl" if use_cuda else "gloo")
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    _STARTED_HERE = True
    atexit.register(shutdown)
    return active()


def shutdown() -> None:
    """Leave the process group (only one this module started)."""
    global _STARTED_HERE
    import torch.distributed as dist

    if _STARTED_HERE and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    _STARTED_HERE = False


def barrier() -> None:
    import torch.distributed as dist

    if active():
        dist.barrier()


def comm_device() -> torch.device:
    """Where collective tensors must live: this rank's GPU for nccl, the CPU for gloo."""
    import torch.distributed as dist

    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def per_rank(path: str | Path) -> Path:
    """This rank's checkpoint file: ``path`` itself in a one-process run, else
    ``<stem>.rank<r>-of-<w><suffix>`` (a rerun with another world size starts its shards
    afresh instead of reading shards cut differently)."""
    path = Path(path)
    if not active():
        return path
    return path.with_name(f"{path.stem}.rank{rank()}-of-{world()}{path.suffix}")


def main_only(ctx: contextlib.AbstractContextManager[T]) -> contextlib.AbstractContextManager:
    """``ctx`` on rank 0, nothing elsewhere (e.g. the output folder's lock)."""
    return ctx if is_main() else contextlib.nullcontext()


def agree_all(flag: bool) -> bool:
    """True only when ``flag`` is true on every rank (e.g. "this pass is cached")."""
    import torch.distributed as dist

    if not active():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


# ---------------------------------------------------------------------------------------------
# Sharding


# Batches this process has run in sharded loops (read by tests to prove a loop was split).
SHARDED = {"batches": 0}


def shard(batches: Iterable[T]) -> Iterator[T]:
    """This rank's batches: every ``world``-th one, starting at ``rank``."""
    r, w = rank(), world()
    for index, batch in enumerate(batches):
        if index % w == r:
            SHARDED["batches"] += 1
            yield batch


def shard_total(total: int | None) -> int | None:
    """Batches of ``total`` that :func:`shard` gives this rank."""
    if total is None:
        return None
    r, w = rank(), world()
    return max(0, (total - r + w - 1) // w)


def _is_resumable(obj: Any) -> bool:
    return callable(getattr(obj, "state", None)) and callable(getattr(obj, "load_state", None))


def mergeable(
    taps: Sequence[Any] = (),
    hooks: Sequence[Any] = (),
    on_logits: Any = None,
    merge: Sequence[Any] = (),
) -> list[Any] | None:
    """The reducers to merge when a batch loop can be sharded; None when it must run whole.

    A loop is sharded only in a distributed run and only when every consumer of its batches
    is accounted for: ``merge`` (what the caller names: TransformerLens hooks are opaque, so
    on that backend only a named list shards), native taps that are themselves resumable
    reducers, a ``SiteTap``'s reducers (``by_layer``), taps marked ``stateless`` (edits that
    keep nothing), and an ``on_logits`` that is a resumable reducer. One consumer that cannot
    be merged (a closure, a reducer without ``state()``) keeps the whole loop unsharded.
    """
    if not active():
        return None
    found: list[Any] = list(merge)
    if hooks and not merge:
        return None
    for tap in taps:
        if hasattr(tap, "by_layer"):  # extract.SiteTap: a fan-out to plain reducers
            found.extend(r for pairs in tap.by_layer.values() for r, _ in pairs)
        elif _is_resumable(tap):
            found.append(tap)
        elif not getattr(tap, "stateless", False):
            return None
    if on_logits is not None:
        if not _is_resumable(on_logits):
            return None
        found.append(on_logits)
    unique = list({id(r): r for r in found}.values())
    if not unique or not all(_is_resumable(r) for r in unique):
        return None
    return unique


# ---------------------------------------------------------------------------------------------
# Merging


def _json(value: Any) -> Any:
    """Counters as a checkpoint would store them (JSON: dict keys become strings)."""
    return json.loads(json.dumps(value))


def _sum_extras(values: Sequence[Any]) -> Any:
    """Sum counters from every rank: numbers add (ints exactly), dicts merge by key, anything
    else must agree."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    first = present[0]
    if isinstance(first, dict):
        keys: list[str] = []
        for v in present:
            keys.extend(k for k in v if k not in keys)
        return {k: _sum_extras([v.get(k) for v in present]) for k in keys}
    if isinstance(first, bool):
        return first
    if isinstance(first, int) and all(isinstance(v, int) for v in present):
        return sum(present)
    if isinstance(first, (int, float)):
        return float(sum(float(v) for v in present))
    if isinstance(first, list) and all(isinstance(v, list) for v in present):
        if all(len(v) == len(first) for v in present) and all(
            isinstance(x, (int, float)) for v in present for x in v
        ):
            return [_sum_extras(list(col)) for col in zip(*present)]
    if any(v != first for v in present):
        raise RuntimeError(f"ranks disagree on a reducer's non-numeric state: {present!r}")
    return first


def _op(reducer: Any, key: str) -> Any:
    """How a state tensor combines over ranks: ``reducer.merge_op(key)`` when the reducer says
    ("sum" / "max" / "min"), else by name: a key whose last ``/`` part is ``max`` or ``min``
    (a running maximum, e.g. massive values' max |x|) takes the max / min, anything else sums."""
    import torch.distributed as dist

    how = reducer.merge_op(key) if callable(getattr(reducer, "merge_op", None)) else None
    how = how or {"max": "max", "min": "min"}.get(key.rsplit("/", 1)[-1], "sum")
    return {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[how]


def merge(reducers: Sequence[Any]) -> None:
    """Sum the partial state of ``reducers`` over all ranks, in place on every rank.

    Each reducer's ``state()`` is taken on every rank; the tensor layouts (names, shapes,
    dtypes) are gathered first, since a rank that saw no batch may hold no tensor for a
    site; every tensor is then all-reduced (``SUM``) in its own dtype (sums are fp64), the
    counters are gathered and added exactly, and ``load_state`` puts the totals back.
    Running maxima / minima combine with MAX / MIN (:func:`_op`). A missing tensor is zeros,
    right for sums and for maxima of absolute values.
    """
    import torch.distributed as dist

    if not active() or not reducers:
        return
    dev = comm_device()
    states = [r.state() for r in reducers]
    local = [
        (
            {k: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for k, t in tensors.items()},
            _json(extra),
        )
        for tensors, extra in states
    ]
    everyone: list[Any] = [None] * world()
    dist.all_gather_object(everyone, local)
    for i, reducer in enumerate(reducers):
        tensors, _ = states[i]
        layout: dict[str, tuple[tuple[int, ...], str]] = {}
        for per_rank_layouts in everyone:
            for key, spec in per_rank_layouts[i][0].items():
                if layout.setdefault(key, spec) != spec:
                    raise RuntimeError(
                        f"ranks disagree on the shape of reducer state {key!r}: "
                        f"{layout[key]} vs {spec}"
                    )
        totals: dict[str, torch.Tensor] = {}
        for key in sorted(layout):
            shape, dtype = layout[key]
            if key in tensors:
                t = tensors[key].detach().to(dev, copy=True).contiguous()
            else:
                t = torch.zeros(shape, dtype=getattr(torch, dtype), device=dev)
            dist.all_reduce(t, op=_op(reducer, key))
            totals[key] = t
        extra = _sum_extras([per_rank_layouts[i][1] for per_rank_layouts in everyone])
        reducer.load_state(totals, extra if extra is not None else {})
