"""`rope-lens figures`: regenerate the paper's figures and tables from saved results.

Reads results folders (``rope-lens analyze`` output, one per model; ``domain-*/`` subfolders
for Fig 19), training grids (``rope-lens table`` output) and recomputes the cheap theory
figures. Writes ``OUT/<model>/<recipe>.{html,png,svg,pdf}`` and ``OUT/INDEX.md``, which lists
every file against the paper's figure. Static formats use kaleido with the system Chromium.

Lean by default: PNG plus interactive HTML, and every HTML page loads one shared
``OUT/plotly.min.js`` instead of inlining its own 4.7 MB copy (``--formats`` adds svg/pdf or
drops html). Recipes that cannot be drawn are listed at the end with the reason (a missing
table, and the analysis that writes it; or no suitable head in the tables).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

NAME = "figures"
HELP = "regenerate the paper's figures/tables from saved results (html, png, svg, pdf)"

log = logging.getLogger(__name__)

DEFAULT_FORMATS = "png,html"
# Table kind -> how to make it (for the list of skipped figures).
MAKES = {
    "band_norm": "rope-lens analyze --analysis band-norm",
    "heads": "rope-lens analyze --analysis heads",
    "profiles": "rope-lens analyze --analysis profiles",
    "per_token": "rope-lens analyze --analysis per-token",
    "decompose": "rope-lens analyze --analysis decompose",
    "apostrophe": "rope-lens analyze --analysis apostrophe",
    "ablation": "rope-lens analyze --analysis ablation",
    "domains": "band-norm runs saved in <model>/domain-<name>/",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--results",
        nargs="*",
        default=["results"],
        help="results folders: a model's folder, or a parent holding one folder per model",
    )
    p.add_argument(
        "--runs", nargs="*", default=[], help="training grid folders (rope-lens table --out)"
    )
    p.add_argument("--out", default="figures/out", help="output folder")
    p.add_argument(
        "--formats",
        default=DEFAULT_FORMATS,
        help="comma-separated subset of html,png,svg,pdf (default: %(default)s; the HTML pages "
        "share one OUT/plotly.min.js; without kaleido and Chromium only html is written)",
    )
    p.add_argument(
        "--theory",
        choices=["full", "quick", "skip"],
        default="full",
        help="also regenerate the theory figures (Figs 2, 8, 9, ...): full, quick or skip",
    )
    p.add_argument("--only", nargs="*", default=None, help="only these recipe keys")


def model_folders(paths: list[str]) -> list[Path]:
    """Folders holding result tables: each path itself, or its immediate subfolders."""
    found = []
    for p in map(Path, paths):
        if not p.is_dir():
            continue
        if any(p.glob("*.parquet")):
            found.append(p)
        else:
            found += sorted(d for d in p.iterdir() if d.is_dir() and any(d.glob("*.parquet")))
    return found


def load_inputs(folder: Path):
    """Every table of one model folder keyed by its kind (see ``viz.paper.table_name_of``), plus
    ``domains`` (name -> band-norm table from ``domain-*/``), as a ``rope_lens.tables.Folder``
    whose ``left_out`` lists (file, why) for every table not drawn: unreadable, edited, or of
    another model than the rest."""
    from rope_lens.tables import read_folder, read_table

    found = read_folder(folder)
    domains = {}
    for sub in sorted(folder.glob("domain-*/band_norm.parquet")):
        df, _meta, why = read_table(sub, found.model_id)
        if df is None:
            found.left_out.append((str(sub.relative_to(folder)), str(why)))
        else:
            domains[sub.parent.name.removeprefix("domain-")] = df
    if domains:
        found.tables["domains"] = domains
    return found


def output_name(model: str, model_id: dict | None) -> str:
    """The output folder of a model's figures, from its identity, not its last folder name:
    a registry name as it is, anything else ``<last part>-<8 hex of its resolved folder>``
    (as ``rope-lens analyze`` names its results folder), so ``runs/a/seed0`` and
    ``runs/b/seed0`` never share one."""
    import hashlib

    from rope_lens.models.registry import REGISTRY
    from rope_lens.request import slug

    if model in REGISTRY:
        return model
    key = str((model_id or {}).get("folder") or model)
    return f"{slug(model)}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


class Saver:
    """Saves figures in the requested formats, dropping static ones if export is impossible
    (then HTML is written even when not asked for, so a run never produces nothing). HTML
    pages share ``out/plotly.min.js``."""

    def __init__(self, formats: list[str], out: Path) -> None:
        from rope_lens.viz.style import static_export_problem

        self.formats = list(formats)
        self.static = [f for f in formats if f != "html"]
        problem = static_export_problem() if self.static else None
        if problem:
            log.warning("%s: writing html only", problem)
            self.static = []
            if "html" not in self.formats:
                self.formats.append("html")
        self.out = out
        self.plotlyjs: Path | None = None
        self.written: list[Path] = []
        self.skipped: list[tuple[str, str, str]] = []  # (recipe, model, why)

    def shared_js(self) -> Path:
        from rope_lens.viz.style import shared_plotlyjs

        if self.plotlyjs is None:
            self.plotlyjs = shared_plotlyjs(self.out)
            self.written.append(self.plotlyjs)
        return self.plotlyjs

    def __call__(self, fig, stem: Path, size: tuple[int, int] = (760, 520)) -> None:
        from rope_lens.viz.style import save_figure

        if "html" in self.formats:
            self.written += save_figure(fig, stem, ["html"], plotlyjs=self.shared_js())
        if self.static:  # a figure that sizes itself (a panel grid) keeps its own size
            width, height = fig.layout.width or size[0], fig.layout.height or size[1]
            self.written += save_figure(fig, stem, self.static, width=width, height=height)


def draw_results(
    folder: Path, out: Path, save: Saver, only, index: list[str], taken: set[str] | None = None
) -> None:
    import hashlib

    from rope_lens.viz.paper import RECIPES

    found = load_inputs(folder)
    tables, model = found.tables, found.model
    for file, why in found.left_out:
        save.skipped.append((f"(table {file})", model, why))
    name = output_name(model, found.model_id)
    taken = set() if taken is None else taken
    if name in taken:  # two results folders of one model (e.g. other prompts): keep both
        name += "-" + hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
    taken.add(name)
    for recipe in RECIPES:
        if only and recipe.key not in only:
            continue
        missing = [k for k in recipe.needs if k not in tables]
        if missing:
            why = "no " + ", ".join(f"{k} table ({MAKES.get(k, k)})" for k in missing)
            save.skipped.append((recipe.key, model, why))
            continue
        try:
            fig = recipe.draw(tables, model)
        except (LookupError, ValueError) as err:  # e.g. no head of that class was found
            save.skipped.append((recipe.key, model, str(err)))
            continue
        save(fig, out / name / recipe.key, recipe.size)
        index.append(f"| {recipe.paper} | {model} | `{name}/{recipe.key}` |")


def draw_runs(
    folder: Path, out: Path, save: Saver, index: list[str], taken: set[str] | None = None
) -> None:
    """Table 2 and training curves from a ``rope-lens table`` grid folder. A CSV that cannot
    be read (or lacks its columns) is skipped with its reason; the other figures are drawn."""
    import hashlib
    import shutil

    import pandas as pd

    from rope_lens.viz import training

    grid = f"training-{folder.name}"
    taken = set() if taken is None else taken
    if grid in taken:  # two grids with one folder name (x/table-cpu, y/table-cpu)
        grid += "-" + hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
    taken.add(grid)
    dest = out / grid
    table = _read_csv(folder / "table.csv", save, folder.name)
    if table is not None and _drawn(
        save,
        folder.name,
        "table2",
        lambda: [
            (training.ptable_figure(table), dest / "table2_perplexity", (900, 700)),
            (training.ptable_html_table(table), dest / "table2_table", (900, 450)),
            (training.length_generalisation(table), dest / "extra_length_generalisation", None),
        ],
    ):
        for name in ("table.md", "table.csv"):
            if (folder / name).exists():
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / name, dest / f"table2_{name}")
        index.append(f"| Table 2 | {folder.name} | `{grid}/table2_*` |")
    metrics, evals = [], []
    for run in sorted(folder.glob("*/*/seed*")):
        dataset, encoding, seed = run.parent.parent.name, run.parent.name, run.name[4:]
        for name, acc in (("metrics.csv", metrics), ("eval.csv", evals)):
            df = _read_csv(run / name, save, folder.name)
            if df is not None:
                acc.append(df.assign(dataset=dataset, encoding=encoding, seed=seed))
    if metrics and _drawn(
        save,
        folder.name,
        "training_loss",
        lambda: [(training.loss_curves(pd.concat(metrics)), dest / "training_loss", None)],
    ):
        index.append(f"| (training curves) | {folder.name} | `{grid}/training_loss` |")
    if evals:
        _drawn(
            save,
            folder.name,
            "training_valid_ppl",
            lambda: [(training.eval_curves(pd.concat(evals)), dest / "training_valid_ppl", None)],
        )


def _read_csv(path: Path, save: Saver, grid: str):
    """A grid's CSV, or None (missing; or unreadable, then listed with the skipped figures)."""
    import pandas as pd

    if not path.exists():
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        save.skipped.append((f"({path.name})", grid, f"{path} is not a readable CSV: {first}"))
        return None


def _drawn(save: Saver, grid: str, key: str, build) -> bool:
    """Save the figures ``build()`` makes; a table without the columns they read is listed
    with the skipped figures instead of stopping every other one."""
    try:
        figures = build()
    except (KeyError, ValueError, TypeError) as err:
        save.skipped.append((key, grid, f"its CSV lacks what the figure reads ({err!r})"))
        return False
    for fig, stem, size in figures:
        save(fig, stem, *(() if size is None else (size,)))
    return True


def run(args: argparse.Namespace) -> int:
    from rope_lens.commands.theory import parse_formats
    from rope_lens.errors import InputError

    formats = parse_formats(args.formats)  # raises InputError for unknown ones
    if "html" not in args.formats:  # parse_formats always adds html; here it is optional
        formats.remove("html")
    out = Path(args.out)
    save = Saver(formats, out)
    folders = model_folders(args.results)
    if not folders and not args.runs and args.theory == "skip":
        raise InputError(
            f"no results tables under {', '.join(args.results)}; run rope-lens analyze"
        )
    index = ["| Paper | Model / grid | Output (+ .html/.png/.svg/.pdf) |", "|---|---|---|"]
    try:
        _draw_all(args, folders, out, save, index)
    except RuntimeError as err:  # kaleido / Chromium failed: the HTML files are written
        log.error("static export failed (%s); HTML files were written", err)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    (out / "INDEX.md").write_text("\n".join(index) + "\n", encoding="utf-8")
    print(report_skipped(save.skipped), end="")
    size = sum(p.stat().st_size for p in save.written if p.exists())
    print(
        f"wrote {len(save.written)} files ({size / 1e6:.1f} MB) under {out} "
        f"(index: {out / 'INDEX.md'})"
    )
    return 0


def report_skipped(skipped: list[tuple[str, str, str]]) -> str:
    """The figures not drawn, grouped by model and reason, one line per group."""
    if not skipped:
        return ""
    groups: dict[tuple[str, str], list[str]] = {}
    for key, model, why in skipped:
        groups.setdefault((model, why), []).append(key)
    lines = [f"skipped {len(skipped)} figure(s):"]
    for (model, why), keys in groups.items():
        lines.append(f"  {model}: {', '.join(keys)}: {why}")
    return "\n".join(lines) + "\n"


def _draw_all(args, folders: list[Path], out: Path, save: Saver, index: list[str]) -> None:
    import contextlib

    from rope_lens.viz.style import static_export

    with static_export() if save.static else contextlib.nullcontext():
        taken: set[str] = set()  # output folder names, one per model / grid
        for folder in folders:
            draw_results(folder, out, save, args.only, index, taken)
        for runs in map(Path, args.runs):
            draw_runs(runs, out, save, index, taken)
        if args.theory != "skip" and not args.only:
            from rope_lens.commands import theory

            formats = ["html", *save.static]
            save.written += theory.regenerate(
                out / "theory", formats, quick=args.theory == "quick", plotlyjs=save.shared_js()
            )
            index.append(
                "| Figs 2, 8, 9; Props 3.1, 3.2, 5.2; Thms 5.3, 6.1; Table 1 | — | `theory/` |"
            )
