"""``rope-lens theory``: regenerate every theory figure, its data, and the computed Table 1.

Each result is computed by :mod:`rope_lens.theory`, drawn by :mod:`rope_lens.viz.theory` and
saved as ``OUT/<name>.html`` (plus any static formats kaleido can write) next to
``OUT/<name>.csv`` with the numbers behind it. ``OUT`` defaults to ``results/theory``, beside
the other results (never the tracked ``figures/theory``), and every page loads one shared
``OUT/plotly.min.js``. ``figures/theory.py`` calls :func:`regenerate`.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
from pathlib import Path

NAME = "theory"
HELP = "regenerate the paper's theory figures (Figs 2, 8, 9; Props 3.1-5.2; Thms 5.3, 6.1; Table 1)"

FORMATS = ("html", "png", "svg", "pdf")
DEFAULT_OUT = "results/theory"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help="output folder, relative to the working directory (default: %(default)s)",
    )
    parser.add_argument(
        "--formats",
        default="html",
        help="comma-separated subset of html,png,svg,pdf (html is always written; the static "
        "ones need kaleido and are skipped with a warning without it)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes (seconds; for smoke tests, not the paper)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (the work is many small tensors)"
    )


def parse_formats(text: str) -> list[str]:
    """``"png,svg"`` -> ``["html", "png", "svg"]``; raises InputError for unknown formats."""
    from rope_lens.errors import InputError

    wanted = [f.strip().lower().lstrip(".") for f in text.split(",") if f.strip()]
    unknown = sorted(set(wanted) - set(FORMATS))
    if unknown:
        raise InputError(f"unknown figure format(s) {unknown}; choose from {', '.join(FORMATS)}")
    return ["html"] + [f for f in dict.fromkeys(wanted) if f != "html"]


def run(args: argparse.Namespace) -> int:
    import torch

    from rope_lens.errors import InputError

    formats = parse_formats(args.formats)
    if args.threads < 0:
        raise InputError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    written = regenerate(Path(args.out), formats, seed=args.seed, quick=args.quick)
    for path in written:
        print(path)
    return 0


def regenerate(
    out: Path,
    formats: list[str] | tuple[str, ...] = ("html",),
    seed: int = 0,
    quick: bool = False,
    plotlyjs: Path | None = None,
) -> list[Path]:
    """Compute, draw and save every theory result under ``out``; returns the files written.

    The pages load ``plotlyjs`` (default: one ``out/plotly.min.js``, written once)."""
    import pandas as pd
    import plotly.graph_objects as go

    from rope_lens import theory as T
    from rope_lens.viz import theory as V
    from rope_lens.viz.style import save_figure, shared_plotlyjs

    out.mkdir(parents=True, exist_ok=True)
    static = [f for f in formats if f != "html"]
    if static and importlib.util.find_spec("kaleido") is None:
        log.warning("kaleido is not installed: writing html only (skipping %s)", ",".join(static))
        static = []
    written: list[Path] = []
    if plotlyjs is None:
        plotlyjs = shared_plotlyjs(out)
        written.append(plotlyjs)

    def save(fig: go.Figure, name: str, **frames: pd.DataFrame) -> None:
        """Write the figure and its data: ``data`` -> name.csv, ``other`` -> name_other.csv."""
        nonlocal static
        written.extend(save_figure(fig, out / name, ["html"], plotlyjs=plotlyjs))
        if static:
            try:
                written.extend(save_figure(fig, out / name, static))
            except Exception as err:  # kaleido present but unusable (no Chromium, ...)
                log.warning("static export failed (%s): writing html only from now on", err)
                static = []
        for key, frame in frames.items():
            path = out / (f"{name}.csv" if key == "data" else f"{name}_{key}.csv")
            frame.to_csv(path, index=False)
            written.append(path)

    n = 500 if quick else 5000
    d = 16 if quick else 64

    frame = T.decay_frame(d_heads=(d, 8 * d), max_distance=n, seed=seed)
    save(
        V.activation_figure(frame, "Fig 2: does RoPE decay with distance?"),
        "fig2_decay",
        data=frame,
    )
    frame = T.random_rope_frame(
        max_positions=(2 * n, 4 * n, 10 * n), n_positions=n, d_head=8 * d, seed=seed
    )
    save(
        V.activation_figure(frame, "Fig 8: RoPE vs Random RoPE", x="index"),
        "fig8_random_rope",
        data=frame,
    )
    frame = T.constant_gaussian_frame(d_head=d, max_distance=n, seed=seed)
    title = "Fig 9: one Gaussian query and key, repeated"
    save(V.activation_figure(frame, title), "fig9_constant_gaussian", data=frame)

    rope = T.encoding_spec("rope", d)
    frame = T.gaussian_expectation(rope, T.default_distances(n), 500 if quick else 4000, seed=seed)
    title = "Prop 3.2: Gaussian q, k have zero mean activation at every distance (99% joint CI)"
    save(V.gaussian_mean_figure(frame, title), "prop3_2_gaussian_mean", data=frame)

    summary, profiles = T.distance_argmax(
        rope, [0, 10, n // 10, n // 4, 2 * n // 5], max_distance=n // 2, seed=seed
    )
    title = "Prop 3.1: the key k = Rʳq makes the logit peak r tokens back"
    save(
        V.distance_argmax_figure(profiles, title),
        "prop3_1_distance_argmax",
        data=summary,
        profiles=profiles,
    )

    small = {e: T.encoding_spec(e, 8) for e in T.ENCODINGS}
    draws = [T.random_weight_search(s, 500 if quick else 4000, seed=seed) for s in small.values()]
    attacks = [
        T.adversarial_search(small[e], target=t, steps=60 if quick else 300, seed=seed)
        for e in ("nope", "rope")
        for t in ("diagonal", "previous")
    ]
    draws_frame = pd.concat(draws, ignore_index=True)
    attack_frame = pd.concat(attacks, ignore_index=True)
    title = "Prop 5.2: on [bos, x, x] a NoPE head never gives a copy of x more than 1/2"
    save(
        # p-RoPE's random heads look like RoPE's (3 of 4 chunks rotate at d = 8): CSV only.
        V.nope_bound_figure(draws_frame[draws_frame["encoding"] != "p-rope"], attack_frame, title),
        "prop5_2_nope_bound",
        data=draws_frame,
        adversary=attack_frame,
    )

    norms = [float(2.0**k) for k in range(-2, 13)]
    frame = pd.concat(
        [T.positional_sharpness(T.encoding_spec(e, d), norms, seed=seed) for e in T.ENCODINGS],
        ignore_index=True,
    )
    title = "Thm 5.3: diagonal (solid) and previous-token (dashed) constructions sharpen with |ψ|"
    save(V.sharpness_figure(frame, title), "thm5_3_sharpness", data=frame)

    contexts = (2, 20, 512) if quick else (2, 20, 8192)
    frame = pd.concat(
        [
            T.required_norm_by_band(rope, contexts, band_size=1),
            T.required_norm_by_band(rope, contexts[-1:], band_size=8),
        ],
        ignore_index=True,
    )
    title = f"Thm 5.3: |ψ|² needed for α ≥ 0.99 over n tokens (d = {d}, θ = 10k)"
    save(V.required_norm_figure(frame, title), "thm5_3_required_norm", data=frame)

    d_llama = 32 if quick else 128
    specs = [
        T.encoding_spec("rope", d_llama, 10_000.0),
        T.encoding_spec("rope", d_llama, 500_000.0),
        T.encoding_spec("p-rope", d_llama, 10_000.0),
    ]
    frame = T.overtaking_table(specs, distractor_phases=(math.pi,))
    title = "Thm 6.1: context length at which an anti-aligned distractor overtakes the target"
    save(V.overtaking_figure(frame, title), "thm6_1_overtaking", data=frame)
    for name, table in (
        ("thm6_1_apostrophe_channel", T.apostrophe_channel()),
        ("thm6_1_paper_numbers", T.paper_rotation_numbers()),
    ):
        table.to_csv(out / f"{name}.csv", index=False)
        written.append(out / f"{name}.csv")

    table = T.table1(d_head=d)
    table.to_csv(out / "table1.csv", index=False)
    (out / "table1.md").write_text(T.table1_markdown(table), encoding="utf-8")
    written += [out / "table1.csv", out / "table1.md"]
    return written
