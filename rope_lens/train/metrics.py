"""Training metrics as JSONL (every row) and CSV (train rows, eval rows), resume-aware.

``metrics.jsonl`` holds every row with a ``kind`` of ``"train"`` or ``"eval"``;
``metrics.csv`` and ``eval.csv`` are the same rows as flat tables for pandas or a spreadsheet.
When a run resumes from step S, rows after S (logged before the interruption but not covered
by the checkpoint) are dropped, so the files read as one uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from rope_lens import atomic

TRAIN_COLUMNS = ("step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed_s")
EVAL_COLUMNS = ("step", "split", "length_multiple", "seq_len", "loss", "ppl", "tokens")


class MetricsLog:
    """Appends rows to ``metrics.jsonl``, ``metrics.csv`` and ``eval.csv`` in ``run_dir``."""

    def __init__(self, run_dir: str | Path, enabled: bool = True) -> None:
        self.dir = Path(run_dir)
        self.enabled = enabled
        self.jsonl = self.dir / "metrics.jsonl"
        self.csv = {"train": self.dir / "metrics.csv", "eval": self.dir / "eval.csv"}

    def rows(self) -> list[dict[str, Any]]:
        if not self.jsonl.is_file():
            return []
        rows = []
        for line in self.jsonl.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a kill mid-write: resume drops it
                continue
        return rows

    def truncate(self, step: int) -> None:
        """Keep only rows with ``step <= step`` (called when resuming from that step).

        Each file is rewritten whole under a temporary name and renamed over the old one, so
        a kill at any point leaves every file holding at least the rows up to ``step`` (the
        old file, or the new one); the next resume truncates again from ``metrics.jsonl``."""
        if not self.enabled:
            return
        keep = [r for r in self.rows() if r["step"] <= step]
        for kind, path in self.csv.items():
            if path.is_file() or any(r["kind"] == kind for r in keep):
                atomic.write_text(path, _csv_text([r for r in keep if r["kind"] == kind], kind))
        atomic.write_text(self.jsonl, "".join(_json_line(r) for r in keep))

    def log(self, kind: str, **row: Any) -> None:
        if self.enabled:
            self._write({"kind": kind, **row})

    def _write(self, row: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.jsonl, "a") as fh:
            fh.write(_json_line(row))
        path = self.csv[row["kind"]]
        text = _csv_text([row], row["kind"], header=not path.is_file())
        with open(path, "a", newline="") as fh:
            fh.write(text)


def _json_line(row: dict[str, Any]) -> str:
    return json.dumps(row, allow_nan=True) + "\n"


def _csv_text(rows: list[dict[str, Any]], kind: str, header: bool = True) -> str:
    """``rows`` of one kind as CSV text (with the header line unless ``header=False``)."""
    columns = TRAIN_COLUMNS if kind == "train" else EVAL_COLUMNS
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return buf.getvalue()


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1 over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``.

    ``step`` is the number of optimizer steps already taken (LambdaLR's convention).
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
