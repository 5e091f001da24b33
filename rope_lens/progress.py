"""One progress bar for analyses and training: it counts tokens, not batches.

Batches differ in size (padding, the last short batch, training vs analysis), so a batch
count says little about speed; the bar here counts real tokens (``attention_mask`` ones, never
padding) and shows tokens/s and an ETA.

When the bar shows at all (:func:`enabled`):

- never under ``--quiet`` / ``--no-progress``;
- never when the stream is not a TTY (logs, CI, ``nohup``): tqdm's carriage returns would fill
  the log with thousands of partial lines;
- only on rank 0 of a distributed run, so N processes do not draw N bars over each other.

Off a TTY a long job (training) can ask for plain progress lines instead (``lines_every``
seconds apart, one line each: tokens done, share, tokens/s, ETA), so a log written by
``nohup`` or CI is not silent for minutes.

The counts are kept even when nothing is drawn (tests, callers that want the totals).
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm.auto import tqdm

from rope_lens.inputs import Batch

# sys.stderr is typed TextIO; io.StringIO and pytest's capture are TextIOBase, not TextIO.
Stream = TextIO | io.TextIOBase


def _rank() -> int:
    """This process' rank: the process group's when one is up, else the launcher's ``RANK``
    (a bar made before ``init_process_group`` must still stay off on rank != 0)."""
    from rope_lens import distributed

    if distributed.active():
        return distributed.rank()
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _is_tty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def enabled(show: bool = True, stream: Stream | None = None) -> bool:
    """Whether a bar is drawn: asked for, on a TTY, and on rank 0."""
    return show and _is_tty(sys.stderr if stream is None else stream) and _rank() == 0


def batch_tokens(batch: Batch) -> int:
    """Real tokens in a batch: the attention mask's ones (padding is not work done)."""
    return int(batch.attention_mask.sum().item())


class TokenBar:
    """A tqdm bar in tokens with tokens/s and, once a total is known, an ETA.

    Args:
        total: total tokens when known (training: steps x tokens per step).
        total_batches: total batches when only those are known (analyses): the token total
            is then estimated as the mean tokens per batch so far x the batches, and refined
            after every batch, so the ETA appears after the first batch.
        initial: tokens already done (a resumed run); not counted in tokens/s.
        show: False for ``--quiet``; the TTY and rank checks are added (:func:`enabled`).
        stream: where to draw (default stderr).
        lines_every: off a TTY (with ``show`` and on rank 0), write a plain progress line at
            most this often, in seconds, and one at the end; None: nothing off a TTY.
    """

    def __init__(
        self,
        desc: str | None = None,
        *,
        total: int | None = None,
        total_batches: int | None = None,
        initial: int = 0,
        show: bool = True,
        stream: Stream | None = None,
        lines_every: float | None = None,
    ) -> None:
        self.tokens = initial
        self.batches = 0
        self.total_batches = total_batches
        self.shown = enabled(show, stream)
        self.desc, self.total, self.initial = desc, total, initial
        self.stream = sys.stderr if stream is None else stream
        self.lines_every = lines_every if show and not self.shown and _rank() == 0 else None
        self.postfix: dict[str, Any] = {}
        self._start = self._last_line = time.monotonic()
        self._bar = tqdm(
            desc=desc,
            total=total,
            initial=initial,
            unit="tok",
            unit_scale=True,  # 1.2Mtok, 35.1ktok/s
            dynamic_ncols=True,
            disable=not self.shown,
            file=sys.stderr if stream is None else stream,
        )

    def update(self, tokens: int, batches: int = 1) -> None:
        self.tokens += tokens
        self.batches += batches
        if self.total_batches and self.batches:
            # Estimated token total: the ETA tqdm draws is then time for the remaining batches.
            estimate = round(self.tokens / self.batches * self.total_batches)
            self._bar.total = max(estimate, self.tokens)
        self._bar.update(tokens)
        if self.lines_every is not None:
            now = time.monotonic()
            if now - self._last_line >= self.lines_every:
                self._last_line = now
                self._line(now)

    def set_postfix(self, **values: Any) -> None:
        self.postfix.update(values)
        self._bar.set_postfix(values)

    def _line(self, now: float) -> None:
        """One plain progress line (off a TTY)."""
        done = self.tokens - self.initial
        rate = done / max(now - self._start, 1e-9)
        total = self._bar.total or self.total
        parts = [f"{self.desc or 'progress'}: {self.tokens:,} tokens"]
        if total:
            parts[0] += f" of {int(total):,} ({self.tokens / total:.0%})"
            left = (total - self.tokens) / rate if rate > 0 else float("inf")
            parts.append(f"ETA {_duration(left)}")
        parts.insert(1, f"{rate:,.0f} tokens/s")
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        print(", ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        if self.total_batches:  # a finished run ends at 100%, not at a stale estimate
            self._bar.total = self._bar.n
        self._bar.close()
        if self.lines_every is not None and self.tokens > self.initial:
            self._line(time.monotonic())
            self.lines_every = None  # closed: once

    def __enter__(self) -> TokenBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _duration(seconds: float) -> str:
    """``125`` -> ``"2m05s"``, ``4000`` -> ``"1h06m"``."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s"


def track(
    batches: Iterable[Batch],
    desc: str | None = None,
    *,
    total_batches: int | None = None,
    skip: int = 0,
    show: bool = True,
    stream: Stream | None = None,
) -> Iterator[Batch]:
    """Yield ``batches`` unchanged while a :class:`TokenBar` counts each one's real tokens once
    the consumer is done with it (so tokens/s is the consumer's speed).

    The first ``skip`` batches (already done by a resumed run, passed over by the consumer) are
    neither counted nor part of the estimated total, so a resume does not show a burst of speed.
    """
    remaining = None if total_batches is None else max(0, total_batches - skip)
    with TokenBar(desc, total_batches=remaining, show=show, stream=stream) as bar:
        for index, batch in enumerate(batches):
            yield batch
            if index >= skip:
                bar.update(batch_tokens(batch))
