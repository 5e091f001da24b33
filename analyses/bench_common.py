"""Measurement helpers shared by the benchmark scripts in this folder (run as scripts, so
they import this module by its bare name)."""

from __future__ import annotations

import time
from pathlib import Path


def packed_sequences(tokenizer, bos_id, n_seqs: int, seq_len: int) -> list[list[int]]:
    """Pack offline Wikipedia leads into n_seqs sequences of exactly seq_len tokens (BOS first)."""
    from rope_lens.inputs import load_texts

    stream: list[int] = []
    for text in load_texts("wiki"):
        stream += tokenizer(text + "\n\n", add_special_tokens=False)["input_ids"]
        if len(stream) >= n_seqs * (seq_len - 1):
            break
    body = seq_len - 1
    return [[bos_id] + stream[i * body : (i + 1) * body] for i in range(n_seqs)]


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def timed(batch_iter, marks: set[int], record: dict):
    """Yield batches; when batch ``k`` in ``marks`` is requested, batches 0..k-1 are done, so
    record the elapsed time and the peak RSS so far under key ``k``."""
    t0 = time.perf_counter()
    n = 0
    for b in batch_iter:
        if n in marks:
            record[n] = (time.perf_counter() - t0, rss_kb("VmHWM"))
        yield b
        n += 1
    record[n] = (time.perf_counter() - t0, rss_kb("VmHWM"))


class TensorPeak:
    """Peak bytes of tensor storage alive at once among the storages created inside the
    ``with`` block: what the work itself allocates, read at the op level, so neither the C
    allocator's caching nor other processes on the machine blur it (peak RSS does both).

    Every op's outputs pass through a ``TorchDispatchMode``; a new storage adds its size and a
    finalizer subtracts it when the storage is freed (storages keep their Python object while
    alive, so the finalizer fires exactly then). Kernels' internal scratch buffers are not
    op outputs and are not seen; they are small and the same for the baseline.
    """

    def __init__(self) -> None:
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode

        peak = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                # Views and in-place results share an input's storage: nothing new.
                shared = {id(x.untyped_storage()) for x in _tensors((args, kwargs))}
                for t in out if isinstance(out, (tuple, list)) else (out,):
                    if isinstance(t, torch.Tensor) and id(t.untyped_storage()) not in shared:
                        peak._track(t)
                return out

        self.mode = _Mode()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _track(self, t) -> None:
        import weakref

        import torch

        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        storage = t.untyped_storage()
        key = id(storage)
        if key in self._seen or storage.nbytes() == 0:
            return
        self._seen.add(key)
        self.live += storage.nbytes()
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, storage.nbytes())

    def _free(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.live -= nbytes

    def __enter__(self) -> TensorPeak:
        self.mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.mode.__exit__(*exc)


def _tensors(tree):
    """Every tensor in nested tuples / lists / dicts of op arguments."""
    import torch

    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, (tuple, list)):
        for x in tree:
            yield from _tensors(x)
    elif isinstance(tree, dict):
        for x in tree.values():
            yield from _tensors(x)
