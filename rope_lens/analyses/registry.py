"""One registered spec per analysis: its module, its options, its table and whether it needs
a forward pass. Everything else reads these specs: the CLI builds its flags from them, the
request validates options against them (a misspelled or inapplicable option is refused with a
suggestion), ``Lens.run`` checks keywords against them, and a saved table's analysis is read
from its sidecar's ``analysis`` field, never guessed from its columns.

Adding an analysis: write its module (``analyze(lm, make_batches, layers, options, progress,
total) -> DataFrame`` and ``summarize(df) -> str``) and add one ``AnalysisSpec`` here. This
module imports nothing heavy (``rope-lens --help`` stays fast).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Option:
    """One analysis option: keyword ``name`` (CLI ``--name-with-dashes``).

    ``default=None`` means "the analysis' own default" (documented in ``help``); ``flag``
    options are booleans set by their presence on the command line. ``minimum``: the smallest
    value that means something; anything below is refused in one line before the run (else a
    0 would quietly fall back to the default, or fail deep inside).
    """

    name: str
    type: Callable[[str], Any] = str
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] | None = None
    flag: bool = False
    minimum: int | None = None

    @property
    def cli(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class AnalysisSpec:
    """What one analysis is and reads.

    Attributes:
        name: CLI name (``--analysis NAME``, ``Lens.run(NAME)``).
        module: the module implementing ``analyze`` and ``summarize``.
        help: one line for ``--help`` and the docs.
        options: the options it reads beyond the common ones (model, prompts, layers, ...).
        forward: False when it reads no text (a closed form of the layout).
        measured: columns that hold measurements and may never be NaN (a table with one is
            refused before it is saved, and never reused).
    """

    name: str
    module: str
    help: str
    options: tuple[Option, ...] = field(default=())
    forward: bool = True
    measured: tuple[str, ...] = ()

    @property
    def table(self) -> str:
        """File stem of its saved table (``<table>.parquet`` + ``<table>.json``)."""
        return self.name.replace("-", "_")


# Options shared by several analyses: one definition each.
HEAD = Option(
    "head",
    int,
    None,
    "query head, 0-based (per-token, decompose: default all; ablation: ablate only this head)",
)
PROMPT_INDEX = Option("prompt_index", int, 0, "which prompt (per-token, decompose)")
CONTEXT = Option(
    "context", int, None, "trained context in tokens (default: the model's)", minimum=2
)
SEED = Option("seed", int, 0, "random seed of generated prompts / controls")
QUERY_POS = Option(
    "query_pos",
    str,
    None,
    "query positions, e.g. 5, 3,5-7,-1 or all (decompose: all while the table stays under 5M "
    "rows, else the last query; head-explorer: the one query it decomposes, default the last)",
)

SPECS: dict[str, AnalysisSpec] = {
    spec.name: spec
    for spec in (
        AnalysisSpec(
            "band-norm",
            "rope_lens.analyses.band_norms",
            "mean 2-norm of every frequency chunk of q, k, v per layer and head (Figs 3, 4, 13)",
            measured=("mean_norm",),
        ),
        AnalysisSpec(
            "heads",
            "rope_lens.analyses.heads",
            "diagonal / previous-token / sink scores and classes of every head (Figs 5, 14-16)",
            (
                Option(
                    "spread",
                    bool,
                    False,
                    "also measure each head's mean attention distance and entropy (exact; "
                    "about a second attention pass per layer; Fig 18 picks its head by entropy)",
                    flag=True,
                ),
            ),
            measured=("diag_score", "prev_score", "sink_score", "entropy"),
        ),
        AnalysisSpec(
            "profiles",
            "rope_lens.analyses.profiles",
            "per-head frequency spectra joined with head classes",
            measured=("mean_norm", "diag_score", "prev_score"),
        ),
        AnalysisSpec(
            "per-token",
            "rope_lens.analyses.per_token",
            "per-token q/k norms and Cauchy-Schwarz bounds of one prompt",
            (HEAD, PROMPT_INDEX),
            measured=("upper_bound", "diag_logit"),
        ),
        AnalysisSpec(
            "decompose",
            "rope_lens.analyses.decompose",
            "each frequency chunk's share of a head's attention logits (App. E.1, Fig 12)",
            (
                HEAD,
                PROMPT_INDEX,
                QUERY_POS,
                Option("key_pos", str, None, "key positions (default: all causal ones)"),
            ),
        ),
        AnalysisSpec(
            "head-explorer",
            "rope_lens.analyses.head_explorer",
            "every head on one prompt for the report's head explorer: attention, q/k spectra, "
            "scores, per-frequency logits of one query, rotation-ablation effect",
            (HEAD, PROMPT_INDEX, QUERY_POS),
            measured=("value",),
        ),
        AnalysisSpec(
            "apostrophe",
            "rope_lens.analyses.apostrophe",
            "search for the paper's apostrophe head (Fig 7)",
            measured=("apostrophe_score",),
        ),
        AnalysisSpec(
            "ablation",
            "rope_lens.analyses.ablation",
            "rotation-free / zeroed / mean-replaced frequency bands at inference: loss and heads",
            (
                HEAD,
                Option(
                    "band",
                    str,
                    None,
                    "chunks LO:HI, HI exclusive, 0 = highest frequency (e.g. 0:8; write "
                    "--band=-8: for the 8 lowest)",
                ),
                Option(
                    "ablation",
                    str,
                    "rotation-free",
                    "what happens to the band (rotation-free = angle 0)",
                    choices=("rotation-free", "zero", "mean"),
                ),
                Option(
                    "sweep",
                    str,
                    "none",
                    "sweep the number of lowest / highest chunks ablated",
                    choices=("none", "low", "high", "both"),
                ),
                Option("sweep_points", int, 8, "band sizes in a sweep", minimum=1),
                Option(
                    "spare_bos",
                    bool,
                    False,
                    "leave position 0 (BOS) unedited, to tell content from the BOS sink",
                    flag=True,
                ),
            ),
            measured=("loss", "base_loss", "delta_loss"),
        ),
        AnalysisSpec(
            "critical",
            "rope_lens.analyses.critical",
            "chunks whose wavelength exceeds the trained context (Thm 6.1; Jonasson 2025)",
            (CONTEXT,),
            forward=False,
            measured=("turns_over_context",),
        ),
        AnalysisSpec(
            "massive-values",
            "rope_lens.analyses.massive_values",
            "concentrated massive q/k values per dim and chunk, and what disrupting them costs "
            "(Jin et al. 2025)",
            (
                Option("massive_lambda", float, None, "massive-value threshold over the mean (5)"),
                Option(
                    "massive_criterion",
                    str,
                    None,
                    "which criterion selects the disrupted dims (massive)",
                    choices=("massive", "massive_token"),
                ),
                Option("no_disrupt", bool, False, "detection only, no disruption", flag=True),
                Option("probe_n", int, None, "contextual-retrieval probe prompts (8)"),
                Option("probe_len", int, None, "tokens per probe prompt (256)"),
                SEED,
            ),
        ),
        AnalysisSpec(
            "sinks",
            "rope_lens.analyses.sinks",
            "attention-sink heads (first-token mass over epsilon) and the chunks that favour "
            "the BOS key (Gu et al. 2025)",
            (
                Option("sink_epsilon", float, None, "sink threshold on first-token mass (0.3)"),
                Option(
                    "sink_prompts", int, None, "prompts for the chunk decomposition (4)", minimum=1
                ),
                Option("sink_len", int, None, "tokens per decomposition prompt (64)", minimum=3),
            ),
            measured=("sink_mass",),
        ),
        AnalysisSpec(
            "passkey",
            "rope_lens.analyses.passkey",
            "passkey retrieval per length, as trained, with inference-time p-RoPE and RoPE "
            "scaling variants; loss by position",
            (
                Option("passkey_lengths", str, None, "comma-separated lengths (256,512,1024)"),
                Option(
                    "passkey_variants",
                    str,
                    None,
                    "comma-separated variants (as-trained,p-rope,linear,dynamic,yarn,llama3)",
                ),
                Option("passkey_prompts", int, None, "prompts per length (5)", minimum=1),
                Option("p", float, None, "p of the inference-time p-RoPE variant (0.75)"),
                CONTEXT,
                Option(
                    "loss_len",
                    int,
                    None,
                    "tokens of the loss-by-position probe (off when omitted)",
                    minimum=2,
                ),
                SEED,
            ),
        ),
    )
}


def spec(name: str) -> AnalysisSpec:
    """The spec of ``name``; unknown names get one line with a close-name suggestion."""
    import difflib

    from rope_lens.errors import InputError

    if name not in SPECS:
        close = difflib.get_close_matches(name, sorted(SPECS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(f"unknown analysis {name!r}{hint}; choose from {', '.join(sorted(SPECS))}")
    return SPECS[name]


def read_option(options: dict[str, Any], name: str, default: Any, cast: Callable[[Any], Any]):
    """``options[name]`` cast with ``cast`` (``default`` when absent or None); a value that
    does not cast is one line naming the flag."""
    from rope_lens.errors import InputError

    value = options.get(name)
    try:
        return default if value is None else cast(value)
    except (TypeError, ValueError) as err:
        raise InputError(f"--{name.replace('_', '-')} got {value!r}") from err


def all_options() -> dict[str, Option]:
    """Every analysis option by name (shared options appear once)."""
    out: dict[str, Option] = {}
    for s in SPECS.values():
        for opt in s.options:
            out.setdefault(opt.name, opt)
    return out


def option_users() -> dict[str, tuple[str, ...]]:
    """Which analyses read each option."""
    users: dict[str, list[str]] = {}
    for s in SPECS.values():
        for opt in s.options:
            users.setdefault(opt.name, []).append(s.name)
    return {name: tuple(names) for name, names in users.items()}
