"""The p-RoPE table (the paper's Table 2, §6.1): run or collect the grid, summarise over seeds,
print.

Grid cell = (dataset, encoding, seed), trained into ``{out}/{dataset}/{encoding}/seed{seed}``.
A cell whose ``results.json`` exists is collected, not retrained; an interrupted cell resumes
from its checkpoint. The summary gives mean ± sample std over seeds of the validation
perplexity at the training length beside the paper's single-run numbers, plus the 2x/4x
length-generalisation perplexities and the held-out split where the dataset has one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rope_lens import atomic
from rope_lens.errors import CheckpointError, RopeLensError
from rope_lens.train.config import TrainConfig
from rope_lens.train.encodings import TABLE2_ENCODINGS, get_encoding

# Barbero et al. (ICLR 2025), Table 2: validation perplexity of Gemma 2B trained from scratch
# (single runs).
PAPER_TABLE2: dict[str, dict[str, float]] = {
    "nope": {"wiki": 4.8594, "flan": 6.6429},
    "rope": {"wiki": 4.4627, "flan": 6.4429},
    "rope-500k": {"wiki": 4.4485, "flan": 6.4593},
    "0.75-rope-reversed": {"wiki": 4.4592, "flan": 6.4683},
    "0.75-rope-partial": {"wiki": 4.4537, "flan": 6.4562},
    "0.25-rope": {"wiki": 4.5302, "flan": 6.5111},
    "0.75-rope": {"wiki": 4.4414, "flan": 6.4422},
}
LABELS = dict(TABLE2_ENCODINGS)
DATASET_LABELS = {"wiki": ("Wiki", "Wiki"), "flan": ("Flan-like", "FlanV2")}


@dataclass(frozen=True)
class Cell:
    dataset: str
    encoding: str
    seed: int

    def run_dir(self, out: Path) -> Path:
        return Path(out) / self.dataset / self.encoding / f"seed{self.seed}"


def grid(datasets: Iterable[str], encodings: Iterable[str], seeds: Iterable[int]) -> list[Cell]:
    """Every cell, encodings in the paper's order; names are validated and canonicalised.

    Seed-major (seed, then dataset, then encoding): a grid stopped part way has whole
    encoding rows for every dataset at the first seeds rather than one dataset fully done.
    """
    names = [get_encoding(e).name for e in encodings]
    datasets = list(datasets)
    return [Cell(d, e, s) for s in seeds for d in datasets for e in names]


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: get SIGTERM when the parent dies (Linux ``PR_SET_PDEATHSIG``), so a
    killed ``table --jobs N`` never leaves orphans training on; exit at once if the parent is
    already gone. Elsewhere a thread polls the parent."""
    import signal
    import sys

    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    else:  # pragma: no cover - only Linux is tested
        import threading
        import time

        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os._exit(143)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(143)


def _run_cell(cfg_dict: dict[str, Any], run_dir: str, data_root: str, threads: int) -> str:
    import torch

    from rope_lens.train.loop import train

    if threads:
        torch.set_num_threads(threads)
    try:
        train(TrainConfig.from_dict(cfg_dict), run_dir, data_root=data_root, progress=False)
    except KeyboardInterrupt:  # SIGTERM from a dying parent: train saved a checkpoint
        if _in_worker():
            os._exit(143)  # never linger in the pool waiting for work from a dead parent
        raise
    return run_dir


def _in_worker() -> bool:
    import multiprocessing as mp

    return mp.parent_process() is not None


def run_grid(
    base: TrainConfig,
    cells: Sequence[Cell],
    out: str | Path,
    *,
    data_root: str | Path = "runs/cache",
    jobs: int = 1,
    threads: int = 0,
    log: Any = None,
) -> list[str]:
    """Train every cell that has no ``results.json`` yet (``jobs`` processes in parallel).

    Returns:
        ``"run_dir: error"`` for every cell that failed with a RopeLensError (the others still
        run; a rerun resumes or retries the failed ones).
    """
    from rope_lens.train.data import prepare_data

    say = log or (lambda _m: None)
    failed = check_cells(base, cells, out)
    for line in failed:
        say(f"FAILED {line}")
    todo = [c for c in cells if not (c.run_dir(Path(out)) / "results.json").is_file()]
    for dataset in sorted({c.dataset for c in todo}):  # build caches once, before any fork
        prepare_data(dataset, base.data_source, base.model.vocab_size, data_root)
    args = []
    for c in todo:
        cfg = dataclasses.replace(base, dataset=c.dataset, encoding=c.encoding, seed=c.seed)
        args.append((cfg.to_dict(), str(c.run_dir(Path(out))), str(data_root), threads))
    if jobs <= 1:
        for a in args:
            say(f"training {a[1]}")
            try:
                _run_cell(*a)
            except RopeLensError as err:  # one bad cell (e.g. diverged) must not stop the grid
                failed.append(f"{a[1]}: {err}")
                say(f"FAILED {a[1]}: {err}")
    else:
        import multiprocessing as mp

        # spawn, not fork: the parent has torch (and its thread pools) initialised already.
        pool = ProcessPoolExecutor(
            jobs,
            mp_context=mp.get_context("spawn"),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )
        try:
            futures = {pool.submit(_run_cell, *a): a[1] for a in args}
            for fut in as_completed(futures):
                try:
                    say(f"finished {fut.result()}")
                except RopeLensError as err:
                    failed.append(f"{futures[fut]}: {err}")
                    say(f"FAILED {futures[fut]}: {err}")
        except BaseException:  # Ctrl-C, SIGTERM: workers checkpoint at their step end and go
            stop_workers(pool)
            raise
        pool.shutdown()
    return failed


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """SIGTERM every worker of ``pool`` (each saves a checkpoint at the end of its step),
    then wait for them, instead of waiting for whole runs to finish."""
    import signal

    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGTERM)
    pool.shutdown(wait=True, cancel_futures=True)


def check_cells(base: TrainConfig, cells: Sequence[Cell], out: str | Path) -> list[str]:
    """``"run_dir: why"`` for every finished cell that cannot stand in today's table: trained
    with other settings than ``base`` (naming them), trained on other data than the other
    finished cells of its dataset, or unreadable. A table never mixes them."""
    from rope_lens.train.loop import _check_resume

    problems: list[str] = []
    data: dict[str, tuple[str, Path]] = {}  # dataset -> (fingerprint, first cell with it)
    for c in cells:
        path = c.run_dir(Path(out)) / "results.json"
        if not path.is_file():
            continue
        cfg = dataclasses.replace(base, dataset=c.dataset, encoding=c.encoding, seed=c.seed)
        try:  # a finished cell counts only if it was trained with today's settings
            res = read_results(path)
            saved = res.get("train_config")
            if saved is None:
                raise CheckpointError(f"{path} records no train_config; delete it to retrain")
            _check_resume(saved, cfg, path)
            fingerprint = str((res.get("data") or {}).get("fingerprint"))
            first = data.setdefault(c.dataset, (fingerprint, path.parent))
            if first[0] != fingerprint:
                raise CheckpointError(
                    f"trained on other {c.dataset} data (fingerprint {fingerprint}) than "
                    f"{first[1]} ({first[0]}); delete one of them to retrain it"
                )
        except RopeLensError as err:
            problems.append(f"{path.parent}: {err}")
    return problems


def read_results(path: Path) -> dict[str, Any]:
    """A cell's ``results.json``, or a one-line CheckpointError if it cannot be read (or does
    not hold what a table needs: ``step``, and a perplexity per evaluated split)."""
    try:
        res = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"{path} is unreadable ({type(err).__name__}); delete it to retrain that cell"
        ) from None
    final = res.get("final") if isinstance(res, dict) else None
    ok = (
        isinstance(res, dict)
        and isinstance(res.get("step"), int)
        and isinstance(final, dict)
        and bool(final)
        and all(
            isinstance(v, dict) and isinstance(v.get("ppl"), int | float) for v in final.values()
        )
        and isinstance(res.get("train_config", {}), dict)
    )
    if not ok:
        raise CheckpointError(
            f"{path} is unreadable (it lacks step, final perplexities or train_config); "
            "delete it to retrain that cell"
        )
    return res


def collect(cells: Sequence[Cell], out: str | Path) -> pd.DataFrame:
    """One row per finished cell: perplexity per split and length multiple (``ppl_valid@2x``)."""
    rows = []
    for c in cells:
        path = c.run_dir(Path(out)) / "results.json"
        if not path.is_file():
            continue
        res = read_results(path)
        row: dict[str, Any] = {
            "dataset": c.dataset,
            "encoding": c.encoding,
            "seed": c.seed,
            "steps": res["step"],
            "wall_s": res.get("wall_s"),
        }
        row.update({f"ppl_{k}": v["ppl"] for k, v in res["final"].items()})
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std and n over seeds for every metric, with the paper's number."""
    if runs.empty:
        return pd.DataFrame()
    metrics = [c for c in runs.columns if c.startswith("ppl_")]
    g = runs.groupby(["dataset", "encoding"], sort=False)[metrics]
    out = g.mean().add_suffix("_mean").join(g.std(ddof=1).add_suffix("_std"))
    out["n"] = g.size()
    out = out.reset_index()
    out["paper"] = [
        PAPER_TABLE2.get(e, {}).get(d, math.nan)
        for d, e in zip(out.dataset, out.encoding, strict=True)
    ]
    return out


def paired_deltas(
    runs: pd.DataFrame, metric: str = "valid@1x", reference: str = "rope"
) -> pd.DataFrame:
    """Per-seed relative change vs ``reference`` in %, (ppl / ppl_ref - 1) x 100, then mean and
    sample std over seeds. Pairing by seed removes what a seed does to every encoding alike
    (init and data order), which dominates the plain std at small scale. Relative numbers are
    comparable with the paper's, whose absolute perplexities are from a different scale."""
    col = f"ppl_{metric}"
    if runs.empty or col not in runs:
        return pd.DataFrame()
    ref = runs[runs.encoding == reference][["dataset", "seed", col]]
    both = runs.merge(ref, on=["dataset", "seed"], suffixes=("", "_ref"))
    both["delta_pct"] = (both[col] / both[f"{col}_ref"] - 1) * 100
    g = both.groupby(["dataset", "encoding"], sort=False)["delta_pct"]
    out = pd.concat(
        [g.mean().rename("mean"), g.std(ddof=1).rename("std"), g.size().rename("n")], axis=1
    ).reset_index()
    out["paper"] = [
        (PAPER_TABLE2[e][d] / PAPER_TABLE2[reference][d] - 1) * 100
        if e in PAPER_TABLE2 and d in PAPER_TABLE2[e]
        else math.nan
        for d, e in zip(out.dataset, out.encoding, strict=True)
    ]
    return out


def format_deltas(deltas: pd.DataFrame) -> str:
    """Markdown of :func:`paired_deltas`: ours (mean ± std over seeds) beside the paper's."""
    datasets = [d for d in DATASET_LABELS if d in set(deltas.get("dataset", []))]
    head = ["Encoding"]
    for d in datasets:
        head += [f"{DATASET_LABELS[d][0]} Δ% (ours, paired)", f"{DATASET_LABELS[d][1]} Δ% (paper)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for enc, label in TABLE2_ENCODINGS:
        cells = [label]
        for d in datasets:
            hit = deltas[(deltas.dataset == d) & (deltas.encoding == enc)]
            ours = "–"
            if not hit.empty:
                r = hit.iloc[0]
                ours = f"{r['mean']:+.2f} ± {r['std']:.2f}" if r["n"] > 1 else f"{r['mean']:+.2f}"
            cells += [ours, f"{(PAPER_TABLE2[enc][d] / PAPER_TABLE2['rope'][d] - 1) * 100:+.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(mean: float, std: float, n: int) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.3f} ± {std:.3f} (n={n})" if n > 1 else f"{mean:.3f} (n=1)"


def format_table(summary: pd.DataFrame, metric: str = "valid@1x", paper: bool = True) -> str:
    """Markdown in the paper's layout: encodings down, datasets across, paper beside ours.

    Args:
        summary: :func:`summarise` output.
        metric: ``{split}@{k}x``; only datasets that have it get a column.
        paper: add the paper's Table 2 column (it only reports validation at 1x).
    """
    col = f"ppl_{metric}"
    have = summary[summary[f"{col}_mean"].notna()] if f"{col}_mean" in summary else summary[:0]
    datasets = [d for d in DATASET_LABELS if d in set(have.get("dataset", []))]
    head = ["Encoding"]
    for d in datasets:
        ours, theirs = DATASET_LABELS[d]
        head += [f"{ours} (ours, mean ± std)"] + ([f"{theirs} (paper)"] if paper else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for enc, label in TABLE2_ENCODINGS:
        cells = [label]
        for d in datasets:
            hit = have[(have.dataset == d) & (have.encoding == enc)]
            if hit.empty:
                cells.append("–")
            else:
                r = hit.iloc[0]
                cells.append(_cell(r[f"{col}_mean"], r[f"{col}_std"], int(r["n"])))
            if paper:
                cells.append(f"{PAPER_TABLE2[enc][d]:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_lengths(summary: pd.DataFrame, split: str = "valid") -> str:
    """Mean perplexity at every evaluated length multiple (length generalisation)."""
    cols = sorted(
        {c[4:-5] for c in summary.columns if c.startswith(f"ppl_{split}@") and c.endswith("_mean")},
        key=lambda k: int(k.split("@")[1][:-1]),
    )
    if not cols:
        return ""
    lines = [
        "| Dataset | Encoding | " + " | ".join(c.split("@")[1] for c in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for d in DATASET_LABELS:
        for enc, label in TABLE2_ENCODINGS:
            hit = summary[(summary.dataset == d) & (summary.encoding == enc)]
            if hit.empty:
                continue
            vals = [f"{hit.iloc[0][f'ppl_{c}_mean']:.3f}" for c in cols]
            lines.append(f"| {DATASET_LABELS[d][0]} | {label} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def ordering(summary: pd.DataFrame, dataset: str, metric: str = "valid@1x") -> dict[str, bool]:
    """The paper's qualitative claims about Table 2 (its §6.1) on our means."""
    col = f"ppl_{metric}_mean"
    m = {r.encoding: r[col] for _, r in summary[summary.dataset == dataset].iterrows()}
    checks = {
        "0.75-RoPE <= RoPE 10k": ("0.75-rope", "rope"),
        "RoPE 10k < 0.25-RoPE": ("rope", "0.25-rope"),
        "0.25-RoPE < NoPE": ("0.25-rope", "nope"),
        "0.75-RoPE < 0.75-RoPE_reversed": ("0.75-rope", "0.75-rope-reversed"),
        "0.75-RoPE < 0.75-RoPE_partial": ("0.75-rope", "0.75-rope-partial"),
        "0.75-RoPE < RoPE 500k": ("0.75-rope", "rope-500k"),
    }
    return {name: bool(m[a] <= m[b]) for name, (a, b) in checks.items() if a in m and b in m}


def save(runs: pd.DataFrame, summary: pd.DataFrame, out: str | Path) -> dict[str, Path]:
    """Write ``runs.csv``, ``table.csv`` and ``table.md`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "runs": out / "runs.csv",
        "table": out / "table.csv",
        "deltas": out / "deltas.csv",
        "markdown": out / "table.md",
    }
    deltas = paired_deltas(runs)
    for key, frame in (("runs", runs), ("table", summary), ("deltas", deltas)):
        atomic.write_file(paths[key], lambda tmp, frame=frame: frame.to_csv(tmp, index=False))
    parts = ["## Validation perplexity at the training length\n", format_table(summary)]
    if not deltas.empty:
        parts += [
            "\n## Change vs RoPE θ = 10k in % (paired by seed; paper: its single runs)\n",
            format_deltas(deltas),
        ]
    if any(c.startswith("ppl_heldout@1x") for c in summary.columns):
        parts += [
            "\n## Held-out split at the training length\n",
            format_table(summary, "heldout@1x", paper=False),
        ]
    parts += [
        "\n## Length generalisation (validation, multiples of the training length)\n",
        format_lengths(summary),
    ]
    for d in sorted(set(summary.dataset)):
        checks = ordering(summary, d)
        if not checks:
            continue
        parts.append(
            f"\n{DATASET_LABELS[d][0]} ordering: "
            + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in checks.items())
        )
    atomic.write_text(paths["markdown"], "\n".join(parts) + "\n")
    return paths
