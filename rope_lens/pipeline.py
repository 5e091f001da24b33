"""From CLI arguments to a saved table: load, tokenize, run one analysis, save, summarise.

Every analysis module in ``rope_lens.analyses.ANALYSES`` exposes
``analyze(lm, make_batches, layers, options, progress) -> DataFrame`` and
``summarize(df) -> str``. ``make_batches()`` returns a fresh iterator of batches, so analyses
that need two passes (e.g. ablations: baseline and ablated) can have them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def slug(name: str) -> str:
    """A folder name for a model name, hub id or path: its last component, never '.' or '..'."""
    last = Path(name.rstrip("/")).name
    return last if last not in ("", ".", "..") else "model"


def run_analysis(args: argparse.Namespace, lm=None) -> int:
    """``lm``: an already loaded model for ``args.model`` (several analyses in one process
    load it once; its device and dtype win over ``args``)."""
    from rope_lens import inputs, io
    from rope_lens.analyses import ANALYSES
    from rope_lens.commands.analyze import parse_layers
    from rope_lens.errors import InputError
    from rope_lens.extract import check_layers
    from rope_lens.models import load_model

    start = time.time()
    texts = inputs.load_texts(args.prompts, args.limit)  # fail fast, before loading a model
    layer_request = parse_layers(args.layers)
    if lm is None:
        lm = load_model(
            args.model,
            device=args.device,
            dtype=args.dtype,
            revision=args.revision,
            trust_remote_code=args.trust_remote_code,
        )
    layers = check_layers(lm, layer_request)
    window = min(args.max_len, lm.max_context)
    if args.max_len > lm.max_context:
        log.warning(
            "--max-len %d exceeds %s's context %d; using %d",
            args.max_len,
            lm.name,
            lm.max_context,
            lm.max_context,
        )
    use_bos = not args.no_bos
    seqs = inputs.tokenize(lm.tokenizer, texts, lm.bos_token_id, window, bos=use_bos)
    has_bos = use_bos and lm.bos_token_id is not None

    def make_batches():
        return inputs.batches(
            seqs,
            args.batch_size,
            lm.tokenizer.pad_token_id,
            has_bos,
            count_bos=args.count_bos,
            max_tokens=args.max_tokens,
        )

    name = args.analysis
    module = importlib.import_module(ANALYSES[name])
    options = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    out_dir = Path(args.out or Path("results") / slug(args.model))
    table = out_dir / f"{name.replace('-', '_')}.parquet"
    meta = {
        **lm.metadata(),
        "analysis": name,
        "prompts": str(args.prompts),
        "n_texts": len(seqs),
        "token_window": window,
        "bos_prepended": has_bos,
        "bos_counted": bool(args.count_bos and has_bos),
        "max_tokens": args.max_tokens,
        "layers": layers,
        "inputs_sha256": io.hash_tokens(seqs),
        "options": {
            k: v
            for k, v in options.items()
            if k not in ("model", "device", "dtype", "out", "force", "no_progress", "verbose")
        },
    }
    if table.exists() and not args.force:
        old = (
            json.loads(table.with_suffix(".json").read_text())
            if table.with_suffix(".json").exists()
            else {}
        )
        same = all(
            old.get(k) == json.loads(json.dumps(meta[k], default=str))
            for k in ("inputs_sha256", "layers", "options", "dtype")
        )
        if same:
            print(f"{table} is up to date (same inputs and options); --force recomputes it")
            return 0
    n_batches = (len(seqs) + args.batch_size - 1) // args.batch_size
    # Partial reductions are checkpointed here so an interrupted run resumes, not restarts.
    options["checkpoint"] = out_dir / f".{name.replace('-', '_')}.partial.safetensors"
    options["inputs_sha256"] = meta["inputs_sha256"]
    df = module.analyze(
        lm,
        make_batches,
        layers,
        options,
        progress=not args.no_progress and sys.stderr.isatty(),
        total=n_batches,
    )
    if df.empty:
        raise InputError("the analysis produced no rows (were all tokens excluded?)")
    meta["seconds"] = round(time.time() - start, 2)
    path = io.save_table(df, table, meta)
    print(module.summarize(df))
    print(f"saved {len(df):,} rows to {path} (+ .json sidecar) in {meta['seconds']:.1f} s")
    return 0
