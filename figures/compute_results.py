"""Compute every results table the paper figures need, for the packaged models, offline.

    python figures/compute_results.py [--models smollm2-135m gemma3-270m] [--results results]
        [--limit N] [--max-len N]   # a smoke run: N texts per corpus, N tokens per text

For each model, into ``RESULTS/<model>/`` (a folder or hub id: ``RESULTS/<name>-<hash>/``, as
``rope-lens analyze`` names it):

- band-norm, heads, profiles, apostrophe and an ablation sweep on the bundled Shakespeare quotes
  (the paper's Fig 3 protocol);
- per-token and decompose on one short prompt with three apostrophes
  (``figures/prompts/apostrophes.txt``; the paper's 20-token prompt is not published), for the
  layers of the heads picked from the saved head scores (decompose is O(T^2 x chunks));
- band-norm on the four Fig 19 domains (``figures/prompts/*.jsonl``) into ``domain-<name>/``.

Tables already up to date are skipped, so rerunning is cheap. Then
``python figures/paper_figures.py`` draws.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rope_lens.errors import RopeLensError
from rope_lens.pipeline import run_request
from rope_lens.request import AnalysisRequest, default_results_dir
from rope_lens.viz.paper import picked_layers

PROMPTS = Path(__file__).parent / "prompts"
DOMAINS = ("italian", "chinese", "python", "arithmetic")
CORPUS = ("band-norm", "heads", "profiles", "apostrophe")
ONE_PROMPT = ("per-token", "decompose")
ABLATION = dict(analysis="ablation", sweep="both", sweep_points=4)


_LOADED: dict[str, object] = {}  # model name -> LoadedModel, so each model loads once


def run_one(model: str, out: Path, **options: Any) -> None:
    """One analysis through the same typed request and pipeline as ``rope-lens analyze``."""
    from rope_lens.models import load_model

    req = AnalysisRequest.build(model=model, out=str(out), progress=False, **options)
    req.validate()  # a bad option is one line before the model loads
    if model not in _LOADED:
        _LOADED[model] = load_model(model, device=req.device, dtype=req.dtype)
    run_request(req, _LOADED[model])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    p.add_argument("--results", default="results", help="parent folder of the model folders")
    p.add_argument("--no-domains", action="store_true", help="skip the Fig 19 domain runs")
    p.add_argument("--no-ablation", action="store_true", help="skip the ablation sweep")
    p.add_argument("--limit", type=int, default=None, help="only the first N texts of each input")
    p.add_argument("--max-len", type=int, default=None, help="token window per text")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    args = p.parse_args(argv)
    budget: dict[str, Any] = {"threads": args.threads}
    budget |= {"limit": args.limit} if args.limit is not None else {}
    budget |= {"max_len": args.max_len} if args.max_len is not None else {}
    try:
        for model in args.models:
            folder = default_results_dir(model, args.results)
            for name in CORPUS:
                print(f"== {model}: {name}", flush=True)
                # heads --spread: Fig 18 picks its head by entropy.
                spread = {"spread": True} if name == "heads" else {}
                run_one(model, folder, analysis=name, **spread, **budget)
            layers = picked_layers(folder) or "0"
            for name in ONE_PROMPT:
                print(f"== {model}: {name} on layers {layers}", flush=True)
                prompts = str(PROMPTS / "apostrophes.txt")
                run_one(model, folder, analysis=name, prompts=prompts, layers=layers, **budget)
            if not args.no_ablation:
                print(f"== {model}: ablation sweep", flush=True)
                run_one(model, folder, **ABLATION, **budget)
            if not args.no_domains:
                for domain in DOMAINS:
                    print(f"== {model}: band-norm on {domain}", flush=True)
                    prompts = PROMPTS / f"{domain}.jsonl"
                    run_one(model, folder / f"domain-{domain}", prompts=str(prompts), **budget)
    except RopeLensError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
