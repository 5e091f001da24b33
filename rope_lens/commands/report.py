"""`rope-lens report`: one self-contained offline HTML report for a model or a results folder.

For a model name, every analysis asked for goes through the pipeline (as ``rope-lens analyze``
would), which reuses a saved table only when its identity (model, weights, inputs, options)
is the one this report claims and recomputes it otherwise: the corpus analyses first, then
the one-prompt ones (per-token, decompose) on a short prompt with three apostrophes, for the
layers of the heads picked from the scores. Only tables of that model are drawn. For a folder,
what is saved there is drawn, if it is of one model (tables of another are left out, saying
why). The page inlines plotly.js (and circuitsvis when attention views are present) and works
offline.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rope_lens.request import APOSTROPHE_PROMPT

NAME = "report"
HELP = "write a self-contained offline HTML report (figures + findings) for a model or folder"

log = logging.getLogger(__name__)
# Ablations are left out by default: a sweep costs minutes and its band is the user's choice.
DEFAULT_ANALYSES = (
    "band-norm",
    "heads",
    "profiles",
    "apostrophe",
    "per-token",
    "decompose",
    "head-explorer",
)
# Per-token and decompose look at one prompt, token by token. The paper's 20-token prompt with
# three apostrophes is unpublished; this one has the same shape. It is written into the results
# folder so that the tables' sidecars name a stable file.
ONE_PROMPT = ("per-token", "decompose", "head-explorer")
PROMPT = APOSTROPHE_PROMPT + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target",
        nargs="?",
        default=None,
        help="a results folder (with *.parquet tables) or a model name (default: --model)",
    )
    p.add_argument("--model", default=None, help="model to analyse (registry name, hub id, folder)")
    p.add_argument(
        "--results",
        default=None,
        help="results folder (default: results/<name> for a registry model, "
        "results/<folder name>-<hash> for a folder or hub id)",
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
    p.add_argument("--quiet", action="store_true", help="no progress bars for the analyses run")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: half the available cores, at most 8)",
    )
    p.add_argument(
        "--analyze-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument passed to each analysis run, e.g. --analyze-arg=--limit=4 "
        "(repeatable)",
    )


def _run_analyses(
    model: str,
    folder: Path,
    names: list[str],
    extra: list[str],
    force: bool,
    threads: int | None = None,
    quiet: bool = False,
):
    """Run each analysis into ``folder`` through the pipeline, which reuses a saved table only
    when its identity is this run's (so a table of another model, other weights, other inputs
    or other options is recomputed, never drawn). Loads the model once, and returns it."""
    from rope_lens import atomic, identity
    from rope_lens.cli import Parser
    from rope_lens.commands import analyze
    from rope_lens.errors import InputError
    from rope_lens.pipeline import load_for, run_request
    from rope_lens.request import AnalysisRequest
    from rope_lens.viz.paper import picked_layers

    def request(name: str, own: list[str]) -> AnalysisRequest:
        parser = Parser(prog=f"rope-lens analyze ({name})")  # bad --analyze-arg: one line
        analyze.add_arguments(parser)
        argv = ["--model", model, "--analysis", name, "--out", str(folder)]
        argv += ["--quiet"] if quiet else []  # else a token bar on a TTY (rope_lens.progress)
        args = parser.parse_args(argv + (["--force"] if force else []) + list(extra) + own)
        req = AnalysisRequest.from_namespace(args).without_irrelevant()
        return req if threads is None else req.replace(threads=threads)

    lm = None
    # Corpus analyses first: the one-prompt ones need the head scores to pick their layers.
    for name in sorted(names, key=lambda n: n in ONE_PROMPT):
        if lm is None:  # loaded once, before any table is trusted
            first = request(name, [])
            first.validate()
            lm = load_for(first)
        own: list[str] = ["--spread"] if name == "heads" else []  # Fig 18 needs the entropy
        if name in ONE_PROMPT:
            prompt = folder / "prompt.txt"
            if not prompt.exists():
                atomic.write_text(prompt, PROMPT)
            own = ["--prompts", str(prompt)]
            if name != "head-explorer":  # the explorer covers every head of every layer
                this = identity.model_identity(lm.folder, lm.revision)
                layers = picked_layers(folder, this)  # from this model's head scores
                if layers is None:
                    log.warning("skipping %s: it needs the heads analysis to pick layers", name)
                    continue
                own += ["--layers", layers]
        try:
            run_request(request(name, own), lm)
        except InputError as err:  # e.g. no apostrophe in the prompts: report the rest
            log.warning("skipping %s: %s", name, err)
    return lm


def check_out(out: str | None) -> None:
    """``--out`` names the HTML file: refuse a folder before any work."""
    from rope_lens.errors import OutputError

    if out is not None and Path(out).is_dir():
        raise OutputError(
            f"--out {out} is a folder; give the HTML file to write, e.g. {Path(out) / 'report.html'}"
        )


def run(args: argparse.Namespace) -> int:
    from rope_lens import identity
    from rope_lens.analyses import ANALYSES
    from rope_lens.errors import InputError
    from rope_lens.models.registry import provenance_of
    from rope_lens.request import check_model_name, default_results_dir
    from rope_lens.tables import read_folder
    from rope_lens.viz.report import render_report, write_report
    from rope_lens.viz.sections import sections_for

    check_out(args.out)
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    target = args.target
    is_folder = target is not None and Path(target).is_dir() and any(Path(target).glob("*.parquet"))
    claimed = None  # a bare folder: the model most of its tables share
    if is_folder:
        folder = Path(str(target))
    else:
        model = target or args.model
        if model is None:
            raise InputError("give a results folder or a model name (see `rope-lens models`)")
        check_model_name(model)
        folder = Path(args.results) if args.results else default_results_dir(model)
        names = sorted(ANALYSES) if args.analyses == "all" else args.analyses.split(",")
        unknown = sorted(set(names) - set(ANALYSES))
        if unknown:
            raise InputError(
                f"unknown analyses {unknown}; choose from {', '.join(sorted(ANALYSES))}"
            )
        lm = _run_analyses(
            model, folder, names, args.analyze_arg, args.force, args.threads, quiet=args.quiet
        )
        claimed = identity.model_identity(lm.folder, lm.revision) if lm is not None else None
    found = read_folder(folder, claimed)
    sections = sections_for(found)
    if not sections:
        why = "; ".join(f"{name}: {reason}" for name, reason in found.left_out)
        raise InputError(
            f"{folder} holds no results table the report can draw" + (f" ({why})" if why else "")
        )
    meta = next(iter(found.metas.values()), {})
    model_name = found.model
    shown = {
        "model": model_name,
        "weights": provenance_of(meta) or "?",
        "architecture": meta.get("architecture", "?"),
        "results folder": str(folder.resolve()),
        "tables": ", ".join(s.title for s in sections),
        "versions": ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items()),
    }
    if found.left_out:
        shown["left out"] = "; ".join(f"{name} ({reason})" for name, reason in found.left_out)
    page = render_report(sections, args.title or f"RoPE usage report: {model_name}", shown)
    path = write_report(page, args.out or folder / "report.html")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, works offline)")
    return 0
