"""`rope-lens analyze`: run one analysis on a model and save its table."""

from __future__ import annotations

import argparse

from rope_lens.request import BATCH_SIZE, CHECKPOINT_EVERY_S, MAX_LEN, parse_layers

__all__ = ["parse_layers", "add_model_arguments", "add_input_arguments", "add_arguments", "run"]

NAME = "analyze"
HELP = "run an analysis (default: band-norm) on a model and save a parquet table"


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that loads a model."""
    p.add_argument(
        "--model",
        default="smollm2-135m",
        help="registry name (see `rope-lens models`), hub id or local folder",
    )
    p.add_argument("--revision", default=None, help="hub revision (commit, tag or branch)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument(
        "--dtype",
        default="auto",
        help="auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow model code from the hub (off by default; only for models you trust)",
    )
    p.add_argument(
        "--offload",
        action="store_true",
        help="a model larger than the device: let accelerate spill weights to CPU RAM and then "
        "disk (slow, same numbers); --device auto already spreads a model over all GPUs",
    )
    p.add_argument(
        "--backend",
        default=None,
        choices=["native", "tl"],
        help="native (default: the model's own sdpa/flash attention, observed through "
        "transformers' attention interface) | tl (TransformerLens bridge, eager attention)",
    )


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prompts",
        default="shakespeare",
        help="shakespeare (default, bundled) | wiki (offline Wikipedia) | FILE.txt | FILE.jsonl",
    )
    p.add_argument("--limit", type=int, default=None, help="use only the first N texts")
    p.add_argument("--max-tokens", type=int, default=None, help="stop after N counted tokens")
    p.add_argument(
        "--max-len",
        type=int,
        default=MAX_LEN,
        help="token window per text; longer texts are truncated with a warning "
        "(capped at the model's context)",
    )
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="texts per batch")
    p.add_argument("--no-bos", action="store_true", help="do not prepend the model's BOS token")
    p.add_argument(
        "--count-bos",
        action="store_true",
        help="include the BOS position in statistics (excluded by default)",
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rope_lens.analyses import ANALYSES
    from rope_lens.analyses.registry import SPECS

    add_model_arguments(p)
    p.add_argument(
        "--analysis",
        default="band-norm",
        choices=sorted(ANALYSES),
        help="; ".join(f"{s.name}: {s.help}" for s in SPECS.values()),
    )
    add_input_arguments(p)
    p.add_argument("--layers", default=None, help="e.g. 0,1,5-10,-1 (default: all)")
    p.add_argument("--out", default=None, help="output folder (default: results/<model>)")
    p.add_argument("--force", action="store_true", help="recompute even if the result exists")
    p.add_argument(
        "--quiet",
        "--no-progress",
        dest="no_progress",
        action="store_true",
        help="no progress bar (there is none off a TTY or on rank != 0 anyway)",
    )
    add_run_arguments(p)
    add_head_arguments(p)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """How a run uses the machine and how often it saves partial work."""
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: half the available cores, at most 8; on a "
        "busy machine fewer is faster)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=float,
        default=CHECKPOINT_EVERY_S,
        metavar="SECONDS",
        help="save partial results this often, to resume after a kill (default %(default)s)",
    )


def add_head_arguments(p: argparse.ArgumentParser) -> None:
    """Every analysis option, built from the registered specs
    (``rope_lens.analyses.registry``): one flag per option, its help naming the analyses that
    read it. Head options are validated against the model in
    ``rope_lens.analyses.head_options``; giving an option its analysis does not read is an
    error (``AnalysisRequest.validate``)."""
    from rope_lens.analyses.registry import all_options, option_users

    users = option_users()
    g = p.add_argument_group("analysis options (each names the analyses that read it)")
    for opt in all_options().values():
        who = ", ".join(users[opt.name])
        default = f"; default {opt.default}" if opt.default not in (None, False) else ""
        help_text = f"{who}: {opt.help}{default}"
        if opt.flag:
            g.add_argument(opt.cli, action="store_true", help=help_text)
        else:
            g.add_argument(
                opt.cli, type=opt.type, default=opt.default, choices=opt.choices, help=help_text
            )


def run(args: argparse.Namespace) -> int:
    from rope_lens.pipeline import run_analysis

    return run_analysis(args)
