"""What one analysis run is asked to do, checked before any model is loaded.

``AnalysisRequest`` sits between the command line and :func:`rope_lens.pipeline.run_analysis`:
the CLI fills it from its flags (``AnalysisRequest.from_namespace``), a notebook or a script can
build one directly, and library code never imports the CLI. This module is also the one home
of layer-range parsing (:func:`parse_layers`), output-folder names (:func:`slug`,
:func:`default_results_dir`) and the batching defaults.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rope_lens.analyses.registry import all_options, option_users
from rope_lens.analyses.registry import spec as analysis_spec
from rope_lens.errors import InputError, ModelNotFoundError

# Batching defaults, shared by the CLI, the pipeline and ``Lens``.
BATCH_SIZE = 4
MAX_LEN = 512
CHECKPOINT_EVERY_S = 60.0
# The report's one-prompt analyses (per-token, decompose, head-explorer) and ``lens.show_head``
# read this prompt. The paper's 20-token prompt with three apostrophes is unpublished; this one
# has the same shape.
APOSTROPHE_PROMPT = "I'm sure it's the one you'd like to read, isn't it? We'll see."
# The smallest value of each input option that means something (the CLI and ``Lens`` refuse
# anything below it in one line: ``limit=0`` once meant "all texts", ``limit=-1`` "all but one").
INPUT_MINIMUMS = {"batch_size": 1, "limit": 1, "max_tokens": 1, "max_len": 2}

# Which analyses read each analysis option (anything else ignores it: giving it is an error).
# Read from the analyses' registered specs (rope_lens.analyses.registry), never written here.
HEAD_OPTION_USERS: dict[str, tuple[str, ...]] = option_users()
# Options that never change the numbers of a table (left out of its identity). ``prompts``
# only names the source: the token ids it gives are hashed into the identity, so the same
# texts from a .txt, a .parquet or a list are one result.
NOT_NUMERIC = {
    "model",
    "prompts",
    "out",
    "force",
    "progress",
    "threads",
    "checkpoint_every",
    "device",
    "offload",
}


def parse_layers(text: str | None) -> list[int] | None:
    """'0,3,5-7,-1' -> [0, 3, 5, 6, 7, -1]; None/'all' -> None (every layer)."""
    if text in (None, "", "all"):
        return None
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)-(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise InputError(f"layer range {part!r} is empty")
            out.extend(range(lo, hi + 1))
        elif re.fullmatch(r"-?\d+", part):
            out.append(int(part))
        else:
            raise InputError(f"cannot read layers {text!r}: use e.g. 0,3,5-7,-1 or all")
    return out


def slug(name: str) -> str:
    """A folder name for a model name, hub id or path: its last component, never '.' or '..'."""
    last = Path(str(name).rstrip("/")).name
    return last if last not in ("", ".", "..") else "model"


def default_results_dir(model: str, root: str | Path = "results") -> Path:
    """``results/<name>`` for a registry name; ``results/<last part>-<8 hex>`` for a folder or
    hub id, the hex from the resolved absolute folder (or the id), so that ``runs/a/seed0``
    and ``runs/b/seed0`` never share a results folder."""
    from rope_lens.models.registry import REGISTRY

    if model in REGISTRY:
        return Path(root) / model
    key = os.path.realpath(model) if Path(model).exists() else model
    return Path(root) / f"{slug(model)}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def check_model_name(model: str) -> None:
    """Fail at once, with a "did you mean", for a name that is no registry entry, folder or
    hub id (the cheap part of ``load_model``'s resolution, without loading anything)."""
    from rope_lens.models.registry import REGISTRY, suggest

    if model in REGISTRY or "/" in model or Path(model).exists():
        return
    if model.startswith((".", "~")):
        return
    close = suggest(model)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ModelNotFoundError(
        f"unknown model {model!r}{hint} (see `rope-lens models`, or pass a hub id or a folder)"
    )


@dataclass(frozen=True)
class AnalysisRequest:
    """One ``rope-lens analyze`` run: model, analysis, inputs, output and options.

    Field names and defaults are the CLI's flags (``--max-tokens`` -> ``max_tokens``).
    """

    model: str = "smollm2-135m"
    analysis: str = "band-norm"
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    backend: str | None = None
    trust_remote_code: bool = False
    offload: bool = False  # spill weights to CPU RAM / disk (rope_lens.models.placement)
    prompts: str = "shakespeare"
    limit: int | None = None
    max_tokens: int | None = None
    max_len: int = MAX_LEN
    batch_size: int = BATCH_SIZE
    no_bos: bool = False
    count_bos: bool = False
    layers: str | None = None
    out: str | None = None
    force: bool = False
    progress: bool = True
    threads: int | None = None
    checkpoint_every: float = CHECKPOINT_EVERY_S
    # head analyses (see HEAD_OPTION_USERS)
    head: int | None = None
    prompt_index: int = 0
    query_pos: str | None = None
    key_pos: str | None = None
    band: str | None = None
    ablation: str = "rotation-free"
    sweep: str = "none"
    sweep_points: int = 8
    spare_bos: bool = False
    # Options of the other analyses (massive-values, sinks, passkey, critical), by name, as
    # their specs declare them; only the ones given (not None / False).
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_namespace(cls, ns: Any) -> AnalysisRequest:
        """From parsed CLI arguments (unknown attributes are ignored)."""
        values = vars(ns)
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in values.items() if k in fields and k != "extra"}
        if "no_progress" in values:
            kw["progress"] = not values["no_progress"]
        # Options left at their default (None, a flag's False, an explicit default such as
        # seed 0) are not passed. Compared by identity for None / False, because 0 == False:
        # ``in (None, False)`` quietly dropped --context 0 and ran the model's context.
        kw["extra"] = {
            name: values[name]
            for name, opt in all_options().items()
            if name not in fields and not _at_default(values.get(name), opt.default)
        }
        return cls(**kw)

    @classmethod
    def build(cls, **options: Any) -> AnalysisRequest:
        """From keyword options as a script writes them (``spread=True``, ``sweep="low"``):
        the request's own fields go to their fields, every other analysis option to
        ``extra`` (checked by :meth:`validate` like a CLI flag)."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        own = {k: v for k, v in options.items() if k in fields}
        extra = {k: v for k, v in options.items() if k not in fields}
        return cls(**own, extra=extra)

    def replace(self, **changes: Any) -> AnalysisRequest:
        return dataclasses.replace(self, **changes)

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else default_results_dir(self.model)

    @property
    def table_name(self) -> str:
        return self.analysis.replace("-", "_")

    def validate(self) -> None:
        """Every check that needs no model. Raises InputError with a one-line fix."""
        from rope_lens.analyses import ANALYSES

        if self.analysis not in ANALYSES:
            raise InputError(
                f"unknown analysis {self.analysis!r}; choose from {', '.join(sorted(ANALYSES))}"
            )
        for name, low in INPUT_MINIMUMS.items():
            value = getattr(self, name)
            if value is not None and value < low:
                flag = "--" + name.replace("_", "-")
                raise InputError(f"{flag} must be at least {low}, got {value}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be at least 1, got {self.threads}")
        if not self.checkpoint_every > 0:
            raise InputError(f"--checkpoint-every must be positive, got {self.checkpoint_every}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        mine = options_for(self.analysis)
        given = {f: getattr(self, f) for f in defaults if f in HEAD_OPTION_USERS and f in mine}
        check_options(self.analysis, {**given, **self.extra})  # types, choices, minimums
        for option, users in HEAD_OPTION_USERS.items():
            if option not in defaults:
                continue
            if getattr(self, option) != defaults[option] and self.analysis not in users:
                flag = "--" + option.replace("_", "-")
                raise InputError(
                    f"{flag} does not apply to {self.analysis} (it is read by "
                    f"{', '.join(users)}); drop it"
                )
        check_model_name(self.model)
        self._check_revision()

    def _check_revision(self) -> None:
        from rope_lens.models.registry import REGISTRY

        entry = REGISTRY.get(self.model)
        if self.revision is not None and entry is not None and entry.source == "gguf-package":
            raise InputError(
                f"--revision does not apply to {self.model}: it is converted from a bundled "
                "offline package, not downloaded; drop --revision"
            )
        if self.revision is not None and Path(self.model).exists():
            raise InputError(
                f"--revision does not apply to the local folder {self.model}; drop --revision"
            )

    def without_irrelevant(self) -> AnalysisRequest:
        """This request with head options this analysis does not read reset to their defaults
        (``report`` passes one set of extra options to several analyses)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        mine = options_for(self.analysis)
        return self.replace(
            **{
                option: defaults[option]
                for option, users in HEAD_OPTION_USERS.items()
                if option in defaults and self.analysis not in users
            },
            extra={k: v for k, v in self.extra.items() if k in mine},
        )

    def analysis_options(self) -> dict[str, Any]:
        """The ``options`` dict an analysis module's ``analyze`` receives."""
        out = dataclasses.asdict(self)
        out.update(out.pop("extra"))
        out["no_progress"] = not self.progress
        out["checkpoint_every_s"] = float(self.checkpoint_every)
        return out

    def numeric_options(self) -> dict[str, Any]:
        """Every option that can change the numbers (part of the table's identity)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in NOT_NUMERIC}


# Options every analysis reads (``Lens.run`` keyword names), beside its head options.
COMMON_OPTIONS = ("checkpoint", "checkpoint_every_s", "checkpoint_key", "inputs_sha256")


def options_for(analysis: str) -> set[str]:
    """The keyword options ``analysis`` reads: its spec's, plus the common ones."""
    return {o.name for o in analysis_spec(analysis).options} | set(COMMON_OPTIONS)


def _at_default(value: Any, default: Any) -> bool:
    if value is None or value is False:
        return True
    return default is not None and type(value) is type(default) and value == default


def check_options(
    analysis: str,
    options: dict[str, Any],
    also: Iterable[str] = (),
    keywords: bool = False,
) -> dict[str, Any]:
    """Refuse options ``analysis`` does not read, with the nearest option name
    (``hed=3`` -> "did you mean head?"), instead of quietly running the default; then values
    of the wrong type, outside their choices or below their minimum.

    Args:
        also: further names a caller takes beside the analysis options (``Lens.run``'s
            ``layers``, ``max_len``, ...), offered as suggestions too: ``layer=`` -> ``layers``.
        keywords: name options as Python keywords (``sweep_points``) rather than CLI flags
            (``--sweep-points``) in messages.

    Returns:
        ``options`` with numbers as plain Python ``int`` / ``float`` / ``bool`` (a numpy
        integer read from a table is as good as an int).

    Raises:
        InputError: naming the option, the suggestion and the options that apply.
    """
    known = options_for(analysis)
    everything = set(HEAD_OPTION_USERS) | set(COMMON_OPTIONS) | set(also)
    for name in options:
        if name in known:
            continue
        if name in HEAD_OPTION_USERS or name in COMMON_OPTIONS:
            users = ", ".join(HEAD_OPTION_USERS.get(name, ()))
            raise InputError(f"option {name!r} does not apply to {analysis} (read by {users})")
        close = nearest(name, everything)
        hint = f"; did you mean {close!r}?" if close else ""
        shown = ", ".join(sorted(known - set(COMMON_OPTIONS))) or "none"
        raise InputError(f"unknown option {name!r} for {analysis}{hint} (it takes: {shown})")
    options = check_types(analysis, options, keywords)
    check_minimums(analysis, options, keywords)
    return options


def nearest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``name`` (difflib's ratio, cutoff 0.6), or None."""
    import difflib

    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1)
    return close[0] if close else None


def _label(opt: Any, keywords: bool) -> str:
    return opt.name if keywords else opt.cli


def check_types(analysis: str, options: dict[str, Any], keywords: bool = False) -> dict[str, Any]:
    """Values a CLI flag could not have produced: an int option given ``2.5`` or ``True``, a
    flag given ``"yes"``, a choice that is not one (with the nearest choice). Strings the CLI
    would parse (``head="2"``) pass; text options are left to their own parsers. Returns
    ``options`` with numpy numbers made plain."""
    from numbers import Integral, Real

    from rope_lens.analyses.registry import spec

    out = dict(options)
    for opt in spec(analysis).options:
        value = options.get(opt.name)
        if value is None:
            continue
        label, kind = _label(opt, keywords), type(value).__name__
        if opt.flag:
            if not isinstance(value, bool) and kind != "bool_":
                raise InputError(f"{label} is a switch: give True or False, got {kind} {value!r}")
            out[opt.name] = bool(value)
        elif opt.type is int:
            if isinstance(value, bool) or not (isinstance(value, Integral) or _parses(value, int)):
                raise InputError(f"{label} must be an integer, got {kind} {value!r}")
            out[opt.name] = value if isinstance(value, str) else int(value)
        elif opt.type is float:
            if isinstance(value, bool) or not (isinstance(value, Real) or _parses(value, float)):
                raise InputError(f"{label} must be a number, got {kind} {value!r}")
            out[opt.name] = value if isinstance(value, str) else float(value)
        if opt.choices is not None and value not in opt.choices:
            close = nearest(str(value), opt.choices)
            hint = f"; did you mean {close!r}?" if close else ""
            raise InputError(
                f"{label} must be one of {', '.join(opt.choices)}, got {value!r}{hint}"
            )
    return out


def _parses(value: Any, cast: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        cast(value)
    except ValueError:
        return False
    return True


def check_minimums(analysis: str, options: dict[str, Any], keywords: bool = False) -> None:
    """Refuse option values below their spec's ``minimum`` (``--context 0`` would otherwise
    mean "the model's own context", quietly)."""
    from rope_lens.analyses.registry import read_option, spec

    for opt in spec(analysis).options:
        if opt.minimum is None or options.get(opt.name) is None:
            continue
        value = read_option(options, opt.name, None, opt.type)
        if value < opt.minimum:
            raise InputError(f"{_label(opt, keywords)} must be at least {opt.minimum}, got {value}")
