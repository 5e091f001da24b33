"""Regenerate the images committed under docs/img/ from saved results, with the current code.

    python figures/compute_results.py          # the tables (both packaged models)
    python figures/docs_images.py --results results --out docs/img

Each image is one recipe of ``rope_lens.viz.paper`` drawn by ``rope-lens figures`` as PNG (at
the figure's own size when it sizes itself, e.g. Gemma 3's Fig 13 grid) and copied under the
name the docs link to.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

# docs/img/<name>.png <- figures/out/<model>/<recipe>.png
IMAGES = {
    "smollm2_qkv_per_layer": ("smollm2-135m", "fig13_qkv_per_layer"),
    "gemma3_qkv_per_layer": ("gemma3-270m", "fig13_qkv_per_layer"),
    "gemma3_query_per_layer": ("gemma3-270m", "fig03a_query_per_layer"),
    "gemma3_query_by_domain": ("gemma3-270m", "fig19_query_by_domain"),
    "gemma3_logits_apostrophe": ("gemma3-270m", "fig12_logits_apostrophe"),
    "smollm2_head_classes": ("smollm2-135m", "extra_head_classes"),
    "smollm2_tokens_diag_last": ("smollm2-135m", "fig15b_k_tokens_diag-last"),
    "smollm2_profile_by_class": ("smollm2-135m", "extra_profile_by_class"),
    "smollm2_ablation_loss": ("smollm2-135m", "extra_ablation_loss"),
}


def main(argv: list[str] | None = None) -> int:
    from rope_lens.commands import figures

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="results", help="parent of the models' results folders")
    p.add_argument("--out", default="docs/img", help="where the docs' images live")
    args = p.parse_args(argv)
    keys = sorted({key for _, key in IMAGES.values()})
    with tempfile.TemporaryDirectory() as tmp:
        parser = argparse.ArgumentParser()
        figures.add_arguments(parser)
        ns = parser.parse_args(
            ["--results", args.results, "--out", tmp, "--formats", "png", "--theory", "skip",
             "--only", *keys]
        )  # fmt: skip
        figures.run(ns)
        missing = []
        Path(args.out).mkdir(parents=True, exist_ok=True)
        for name, (model, key) in IMAGES.items():
            made = Path(tmp) / model / f"{key}.png"
            if not made.exists():
                missing.append(f"{name} ({model}/{key})")
                continue
            shutil.copyfile(made, Path(args.out) / f"{name}.png")
            print(f"{Path(args.out) / name}.png <- {model}/{key}")
    if missing:
        print(f"error: not drawn (see the list above): {', '.join(missing)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
