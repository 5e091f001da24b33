"""Validation of the head-analysis options: heads, prompts, positions and frequency bands.

Every bad value raises ``InputError`` with one line that names the valid range, before any
forward pass runs. Options arrive as the CLI's strings / ints (see ``commands.analyze``) or as
plain Python values from library callers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from rope_lens.errors import InputError
from rope_lens.inputs import Batch
from rope_lens.models.load import LoadedModel


def check_head(lm: LoadedModel, head: int | str | None) -> int | None:
    """A query-head index (negative counts from the end); None stays None ("all heads")."""
    if head is None:
        return None
    try:  # the Python API may hand us "2" where the CLI already parsed an int
        head = int(head)
    except (TypeError, ValueError):
        raise InputError(f"head must be an integer, got {head!r}") from None
    idx = head + lm.n_heads if head < 0 else head
    if not 0 <= idx < lm.n_heads:
        raise InputError(f"head {head} is out of range: {lm.name} has heads 0..{lm.n_heads - 1}")
    return idx


def heads_or_all(lm: LoadedModel, head: int | str | None) -> list[int]:
    head = check_head(lm, head)
    return list(range(lm.n_heads)) if head is None else [head]


def select_prompt(make_batches: Callable[[], Iterable[Batch]], index: int) -> Batch:
    """Row ``index`` of the tokenized prompts as a one-row batch without padding."""
    if index < 0:
        raise InputError(f"--prompt-index must be >= 0, got {index}")
    seen = 0
    for batch in make_batches():
        rows = batch.input_ids.shape[0]
        if index < seen + rows:
            r = index - seen
            n = int(batch.attention_mask[r].sum())
            return Batch(
                batch.input_ids[r : r + 1, :n],
                batch.attention_mask[r : r + 1, :n],
                batch.positions[r : r + 1, :n],
                batch.count_mask[r : r + 1, :n],
            )
        seen += rows
    raise InputError(f"--prompt-index {index} is out of range: there are {seen} prompts")


def parse_positions(spec: str | int | Sequence[int] | None, length: int) -> list[int] | None:
    """'3', '0,5-7', '-1' or a list -> sorted positions in a prompt of ``length`` tokens;
    None / 'all' -> None (all positions). Negative positions count from the end."""
    if spec is None or spec == "all" or spec == "":
        return None
    if isinstance(spec, int):
        items = [spec]
    elif isinstance(spec, str):
        items = []
        for part in spec.split(","):
            part = part.strip()
            m = re.fullmatch(r"(\d+)-(\d+)", part)
            if m:
                items.extend(range(int(m.group(1)), int(m.group(2)) + 1))
            elif re.fullmatch(r"-?\d+", part):
                items.append(int(part))
            else:
                raise InputError(f"cannot read positions {spec!r}: use e.g. 5 or 0,3,5-7,-1")
    else:
        items = [int(p) for p in spec]
    out = []
    for p in items:
        idx = p + length if p < 0 else p
        if not 0 <= idx < length:
            raise InputError(f"position {p} is beyond the prompt: it has positions 0..{length - 1}")
        out.append(idx)
    return sorted(set(out))


def parse_band(spec: str | tuple[int, int] | None, n_chunks: int) -> tuple[int, int] | None:
    """'LO:HI' (chunk indices, HI exclusive, chunk 0 = highest frequency; Python-slice style,
    so ':8' is the 8 highest and '-8:' the 8 lowest) -> (lo, hi); None stays None."""
    if spec is None:
        return None
    if isinstance(spec, str):
        m = re.fullmatch(r"\s*(-?\d*)\s*:\s*(-?\d*)\s*", spec)
        if not m:
            raise InputError(f"cannot read band {spec!r}: use LO:HI, e.g. 0:8, :8 or -8:")
        lo = int(m.group(1)) if m.group(1) else 0
        hi = int(m.group(2)) if m.group(2) else n_chunks
    else:
        lo, hi = (int(v) for v in spec)
    lo = lo + n_chunks if lo < 0 else lo
    hi = hi + n_chunks if hi < 0 else hi
    if not 0 <= lo <= hi <= n_chunks:
        raise InputError(
            f"band {spec!r} is outside the frequency range: chunks are 0..{n_chunks - 1} "
            "(0 = highest frequency)"
        )
    return lo, hi
