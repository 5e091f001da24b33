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
