"""Models larger than one device: placement across GPUs, CPU RAM and disk through accelerate.

``--device auto`` on several GPUs spreads a model over all of them (``device_map="auto"``;
not in a data-parallel run, where each process holds the whole model on its own GPU).
``--offload`` lets accelerate spill what does not fit to CPU RAM and then to disk (an
``offload_folder``), so a 7B model can be analysed on a small GPU or a CPU box with less RAM
than its weights: slowly, one layer's weights brought in at a time, but the same numbers
(tests/unit/test_placement.py forces a split with ``max_memory``).

Without ``--offload`` a model whose weights cannot fit fails before loading, in one line:
the memory it needs against the memory available, and the flag that would help.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from rope_lens.errors import InputError

GIB = 2**30


def weight_bytes(folder: Path, dtype: torch.dtype) -> int | None:
    """Bytes the weights take in ``dtype``, from the safetensors headers (None: unknown)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    n = 0
    for f in files:
        with open(f, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
        for key, info in header.items():
            if key != "__metadata__":
                numel = 1
                for d in info["shape"]:
                    numel *= d
                n += numel
    return n * torch.empty((), dtype=dtype).element_size()


def available_bytes(dev: str) -> tuple[int, str]:
    """Free memory where ``dev`` would put the weights, and a description of it."""
    if dev.startswith("cuda") and torch.cuda.is_available():
        ids = [int(dev.split(":")[1])] if ":" in dev else range(torch.cuda.device_count())
        free = sum(torch.cuda.mem_get_info(i)[0] for i in ids)
        return free, f"{len(list(ids))} GPU(s)"
    try:
        import psutil

        return int(psutil.virtual_memory().available), "CPU RAM"
    except ImportError:  # pragma: no cover
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return int(pages), "CPU RAM"


def check_fits(name: str, folder: Path, dtype: torch.dtype, dev: str, offload: bool) -> None:
    """Fail in one line when the weights cannot fit and nothing may spill.

    Raises:
        InputError: needed vs available memory, and ``--offload`` (or a smaller dtype).
    """
    if offload:
        return
    need = weight_bytes(folder, dtype)
    if need is None:
        return
    have, where = available_bytes(dev)
    if need > have:
        dtype_name = str(dtype).removeprefix("torch.")
        raise InputError(
            f"{name} needs {need / GIB:.1f} GiB for its weights in {dtype_name} but {where} has "
            f"{have / GIB:.1f} GiB free; add --offload to spill to CPU RAM and disk (slow), "
            "or use a smaller --dtype"
        )


def from_pretrained_kwargs(
    dev: str,
    offload: bool = False,
    max_memory: dict[Any, Any] | None = None,
    offload_folder: str | Path | None = None,
) -> dict[str, Any]:
    """``from_pretrained`` placement arguments: ``device_map`` (None: load then ``.to(dev)``),
    ``max_memory`` and an ``offload_folder`` when spilling to disk is allowed."""
    from rope_lens import distributed

    multi_gpu = (
        dev == "cuda" and torch.cuda.device_count() > 1 and not distributed.active()
    )  # data-parallel: every rank holds the whole model on its own GPU
    if not (multi_gpu or offload or max_memory):
        return {"device_map": None}
    kw: dict[str, Any] = {"device_map": "auto"}
    if max_memory:
        kw["max_memory"] = max_memory
    if offload:
        folder = offload_folder or tempfile.mkdtemp(prefix="rope-lens-offload-")
        kw["offload_folder"] = str(folder)
    return kw


def input_device(model: Any) -> torch.device:
    """Where inputs go: the embedding's execution device (an offloaded embedding's weight is
    on ``meta``; accelerate's hook says where it runs)."""
    emb = model.get_input_embeddings()
    hook = getattr(emb, "_hf_hook", None)
    dev = getattr(hook, "execution_device", None)
    if dev is not None:
        return torch.device("cuda", dev) if isinstance(dev, int) else torch.device(dev)
    weight = emb.weight.device
    return torch.device("cpu") if weight.type == "meta" else weight
