"""`rope-lens report`: one self-contained offline HTML report for a model or a results folder.

For a model name, the analyses whose tables are missing from its results folder are run first
(as ``rope-lens analyze`` would): the corpus analyses, then the one-prompt ones (per-token,
decompose) on a short prompt with three apostrophes, for the layers of the heads picked from
the saved scores. For a folder, only what is saved there is drawn. The page inlines plotly.js
(and circuitsvis when attention views are present) and works offline.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

NAME = "report"
HELP = "write a self-contained offline HTML report (figures + findings) for a model or folder"

log = logging.getLogger(__name__)
# Ablations are left out by default: a sweep costs minutes and its band is the user's choice.
DEFAULT_ANALYSES = ("band-norm", "heads", "profiles", "apostrophe", "per-token", "decompose")
# Per-token and decompose look at one prompt, token by token. The paper's 20-token prompt with
# three apostrophes is unpublished; this one has the same shape. It is written into the results
# folder so that the tables' sidecars name a stable file.
ONE_PROMPT = ("per-token", "decompose")
PROMPT = "I'm sure it's the one you'd like to read, isn't it? We'll see.\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target",
        nargs="?",
        default=None,
        help="a results folder (with *.parquet tables) or a model name (default: --model)",
    )
    p.add_argument("--model", default=None, help="model to analyse (registry name, hub id, folder)")
    p.add_argument(
        "--results", default=None, help="results folder (default: results/<model> for a model)"
    )
    p.add_argument(
        "--analyses",
        default=",".join(DEFAULT_ANALYSES),
        help="comma-separated analyses to run when tables are missing, or 'all' (default: "
        "%(default)s; per-token and decompose run on a short apostrophe prompt, for the layers "
        "of the picked heads; pass ablation options with --analyze-arg)",
    )
    p.add_argument("--out", default=None, help="output HTML (default: <results>/report.html)")
    p.add_argument("--title", default=None, help="page title (default: from the model name)")
    p.add_argument("--force", action="store_true", help="rerun analyses even if tables exist")
    p.add_argument(
        "--analyze-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument passed to each analysis run, e.g. --analyze-arg=--limit=4 "
        "(repeatable)",
    )


def picked_layers(folder: Path) -> str | None:
    """Layers of the heads the per-token figures will show, picked from the saved scores
    (``"3,17,29"``), or None when no head scores are saved."""
    from rope_lens.io import load_table
    from rope_lens.viz.paper import ROLES, pick_head

    tables = {}
    for kind in ("heads", "apostrophe"):
        if (folder / f"{kind}.parquet").exists():
            tables[kind] = load_table(folder / f"{kind}.parquet")[0]
    if "heads" not in tables:
        return None
    layers = set()
    for role in ROLES:
        try:
            layers.add(pick_head(tables, role, "heads")[0])
        except (LookupError, KeyError):  # e.g. no apostrophe table: that role is skipped
            pass
    return ",".join(map(str, sorted(layers))) or None


def _run_missing(model: str, folder: Path, names: list[str], extra: list[str], force: bool) -> None:
    """Run each analysis whose table is absent from ``folder`` (or all with ``force``)."""
    from rope_lens.commands import analyze
    from rope_lens.errors import RopeLensError
    from rope_lens.pipeline import run_analysis

    lm = None  # loaded by the first analysis that runs, then shared by the others
    # Corpus analyses first: the one-prompt ones need the head scores to pick their layers.
    for name in sorted(names, key=lambda n: n in ONE_PROMPT):
        table = folder / f"{name.replace('-', '_')}.parquet"
        if table.exists() and not force:
            continue
        own: list[str] = []
        if name in ONE_PROMPT:
            layers = picked_layers(folder)
            if layers is None:
                log.warning("skipping %s: it needs the heads analysis to pick layers", name)
                continue
            prompt = folder / "prompt.txt"
            if not prompt.exists():
                folder.mkdir(parents=True, exist_ok=True)
                prompt.write_text(PROMPT, encoding="utf-8")
            own = ["--prompts", str(prompt), "--layers", layers]
        parser = argparse.ArgumentParser(prog=f"rope-lens analyze ({name})")
        analyze.add_arguments(parser)
        argv = ["--model", model, "--analysis", name, "--out", str(folder), "--no-progress"]
        args = parser.parse_args(argv + (["--force"] if force else []) + list(extra) + own)
        args.command = "analyze"  # as the CLI records it, so the up-to-date check matches
        try:
            if lm is None:
                from rope_lens.models import load_model

                lm = load_model(
                    model,
                    device=args.device,
                    dtype=args.dtype,
                    revision=args.revision,
                    trust_remote_code=args.trust_remote_code,
                )
            run_analysis(args, lm)
        except RopeLensError as err:  # e.g. no apostrophe in the prompts: report the rest
            log.warning("skipping %s: %s", name, err)


def run(args: argparse.Namespace) -> int:
    from rope_lens.analyses import ANALYSES
    from rope_lens.errors import InputError
    from rope_lens.pipeline import slug
    from rope_lens.viz.report import render_report, write_report
    from rope_lens.viz.sections import sections_from_folder

    target = args.target
    is_folder = target is not None and Path(target).is_dir() and any(Path(target).glob("*.parquet"))
    if is_folder:
        folder = Path(target)
    else:
        model = target or args.model
        if model is None:
            raise InputError("give a results folder or a model name (see `rope-lens models`)")
        folder = Path(args.results or Path("results") / slug(model))
        names = sorted(ANALYSES) if args.analyses == "all" else args.analyses.split(",")
        unknown = sorted(set(names) - set(ANALYSES))
        if unknown:
            raise InputError(
                f"unknown analyses {unknown}; choose from {', '.join(sorted(ANALYSES))}"
            )
        _run_missing(model, folder, names, args.analyze_arg, args.force)
    sections, meta = sections_from_folder(folder)
    if not sections:
        raise InputError(f"{folder} holds no results table the report knows how to draw")
    model_name = meta.get("model", folder.name)
    shown = {
        "model": model_name,
        "architecture": meta.get("architecture", "?"),
        "results folder": str(folder.resolve()),
        "tables": ", ".join(s.title for s in sections),
        "versions": ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items()),
    }
    page = render_report(sections, args.title or f"RoPE usage report: {model_name}", shown)
    path = write_report(page, args.out or folder / "report.html")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, works offline)")
    return 0
