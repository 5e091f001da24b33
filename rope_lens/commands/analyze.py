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

    add_model_arguments(p)
    p.add_argument("--analysis", default="band-norm", choices=sorted(ANALYSES))
    add_input_arguments(p)
    p.add_argument("--layers", default=None, help="e.g. 0,1,5-10,-1 (default: all)")
    p.add_argument("--out", default=None, help="output folder (default: results/<model>)")
    p.add_argument("--force", action="store_true", help="recompute even if the result exists")
    p.add_argument("--no-progress", action="store_true")
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
    """Options of the head analyses (heads, profiles, per-token, decompose, apostrophe,
    ablation); validated against the model in ``rope_lens.analyses.head_options``."""
    g = p.add_argument_group("head analyses")
    g.add_argument(
        "--head",
        type=int,
        default=None,
        help="query head (0-based; per-token, decompose: default all; ablation: ablate only "
        "this head, default all)",
    )
    g.add_argument(
        "--prompt-index", type=int, default=0, help="which prompt (per-token, decompose)"
    )
    g.add_argument(
        "--query-pos", default=None, help="decompose: query positions, e.g. 5 or 3,5-7,-1 (all)"
    )
    g.add_argument(
        "--key-pos", default=None, help="decompose: key positions (default: all causal ones)"
    )
    g.add_argument(
        "--band",
        default=None,
        help="ablation: chunks LO:HI, HI exclusive, 0 = highest frequency (e.g. 0:8; write "
        "--band=-8: for the 8 lowest)",
    )
    g.add_argument(
        "--ablation",
        default="rotation-free",
        choices=["rotation-free", "zero", "mean"],
        help="ablation: what happens to the band (default rotation-free = angle 0)",
    )
    g.add_argument(
        "--sweep",
        default="none",
        choices=["none", "low", "high", "both"],
        help="ablation: sweep the number of lowest / highest chunks ablated",
    )
    g.add_argument(
        "--sweep-points", type=int, default=8, help="ablation: band sizes in a sweep (default 8)"
    )
    g.add_argument(
        "--spare-bos",
        action="store_true",
        help="ablation: leave position 0 (BOS) unedited, to tell content from the BOS sink",
    )


def run(args: argparse.Namespace) -> int:
    from rope_lens.pipeline import run_analysis

    return run_analysis(args)
