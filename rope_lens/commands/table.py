"""``rope-lens table``: run or collect the Table 2 grid and print it beside the paper."""

from __future__ import annotations

import argparse
import sys

from rope_lens.train.encodings import TABLE2_NAMES  # torch-free: the one Table 2 list

NAME = "table"
HELP = "train/collect {NoPE, RoPE, p-RoPE variants} x {Wiki, Flan-like} x seeds; print Table 2"

DEFAULT_ENCODINGS = list(TABLE2_NAMES)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="cpu", help="preset: cpu, gpu or gemma-2b")
    parser.add_argument("--datasets", nargs="+", default=["wiki", "flan"], choices=["wiki", "flan"])
    parser.add_argument("--encodings", nargs="+", default=DEFAULT_ENCODINGS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--out", default=None, help="grid folder (default runs/table-CONFIG)")
    parser.add_argument("--data-root", default="runs/cache", help="tokenized caches")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (repeatable)",
    )
    parser.add_argument(
        "--collect-only", action="store_true", help="only summarise finished runs; train nothing"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs trained in parallel (CPU)")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads per run (0 = torch's default)"
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="every run on one CPU thread with deterministic algorithms (= --set "
        "deterministic=true): cells that do not depend on the core count",
    )


def run(args: argparse.Namespace) -> int:
    from rope_lens.train import table
    from rope_lens.train.config import get_preset, override

    sets = list(args.overrides) + (["deterministic=true"] if args.deterministic else [])
    cfg = override(get_preset(args.config), sets)
    out = args.out or f"runs/table-{args.config}"
    cells = table.grid(args.datasets, args.encodings, args.seeds)
    failed: list[str] = []
    if not args.collect_only:
        failed = table.run_grid(
            cfg,
            cells,
            out,
            data_root=args.data_root,
            jobs=args.jobs,
            threads=args.threads,
            log=lambda m: print(m, file=sys.stderr),
        )
    refused = table.check_cells(cfg, cells, out)
    if refused:  # a table never mixes settings, and a refused table is never written
        for line in refused[1:]:
            print(f"also refused: {line}", file=sys.stderr)
        more = f" (and {len(refused) - 1} more above)" if len(refused) > 1 else ""
        print(f"error: no table written: {refused[0]}{more}", file=sys.stderr)
        return 2
    runs = table.collect(cells, out)
    if runs.empty:
        print(f"no finished runs under {out}", file=sys.stderr)
        return 1
    summary = table.summarise(runs)
    paths = table.save(runs, summary, out)
    print(paths["markdown"].read_text())
    missing = len(cells) - len(runs)
    if missing:
        print(f"{missing} of {len(cells)} runs not finished yet", file=sys.stderr)
    print(f"saved {paths['markdown']}, {paths['table']}, {paths['runs']}", file=sys.stderr)
    for line in failed:
        print(f"error: {line}", file=sys.stderr)
    return 2 if failed else 0
