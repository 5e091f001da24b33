"""What the arguments of a ``Lens`` call mean, checked as strictly as the CLI checks its flags.

A notebook call gets the same one-line ``InputError`` for the same mistake as
``rope-lens analyze``, never a raw ``TypeError`` and never a quiet reinterpretation:

- ``prompts`` names a source, as ``--prompts`` does: a built-in corpus (``shakespeare``,
  ``wiki``), a ``.txt`` / ``.jsonl`` file or a corpus the CLI reads lazily (parquet, arrow,
  a datasets folder); or it is a list of texts. A string that names no source is refused
  with the nearest source name and the explicit way to pass text (``texts="..."``): the typo
  ``prompts="shakespear"`` once analysed the one word "shakespear".
- ``texts`` is the texts themselves: one string or a list of strings.
- ``layers`` is a list of layer indices (negatives count from the end) or the CLI's text
  (``"0,3,5-7,-1"``); ``None`` is every layer.
- sizes (``limit``, ``max_len``, ``batch_size``, ``max_tokens``) are integers with the CLI's
  minimums (``rope_lens.request.INPUT_MINIMUMS``); switches (``bos``, ...) are booleans.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path
from typing import Any

from rope_lens import inputs
from rope_lens.errors import InputError
from rope_lens.request import INPUT_MINIMUMS, nearest, parse_layers

Prompts = str | Path | Sequence[str]

# The annotations of ``Lens``'s public methods document the types; the values are checked here
# with the CLI's one-line errors. ``no_type_check`` keeps the test suite's runtime type checker
# (jaxtyping + beartype over the package) from pre-empting those checks with a TypeCheckError a
# user, who runs without it, would never see.
checked_here = typing.no_type_check

# ``Lens.run``'s own keywords: offered as "did you mean" beside the analysis options.
RUN_KEYWORDS = (
    "prompts",
    "texts",
    "layers",
    "max_len",
    "batch_size",
    "bos",
    "count_bos",
    "max_tokens",
    "limit",
    "progress",
)
_LONGEST_PATH = 4096


@checked_here
def resolve_texts(
    prompts: Prompts | None = None, texts: str | Sequence[str] | None = None, limit: Any = None
) -> Sequence[str]:
    """The texts a call stands for: ``texts`` as given, or the source ``prompts`` names
    (default: the bundled Shakespeare quotes); the first ``limit`` of them.

    Raises:
        InputError: both or a wrong type given, a string that names no source, no non-empty
            text, or ``limit`` below 1.
    """
    limit = check_size("limit", limit)
    if texts is not None:
        if prompts is not None:
            raise InputError(
                "give prompts= (a source: built-in name or file) or texts= (the texts "
                "themselves), not both"
            )
        return _explicit(texts, limit, "texts")
    if prompts is None:
        prompts = "shakespeare"
    if isinstance(prompts, Path):
        return _source(prompts, limit)
    if isinstance(prompts, str):
        if not prompts.strip():
            raise InputError("no non-empty prompts given: prompts= is blank")
        if names_a_source(prompts):
            return _source(prompts, limit)
        raise InputError(_not_a_source(prompts))
    if isinstance(prompts, Sequence):
        return _explicit(prompts, limit, "prompts")
    raise InputError(
        f"prompts must be a source name, a path or a list of texts, got "
        f"{type(prompts).__name__} {_short(prompts)}"
    )


def names_a_source(text: str) -> bool:
    """A built-in corpus name, or a path that exists (file or corpus folder)."""
    if text in inputs.BUILTIN_SOURCES:
        return True
    if not text or "\n" in text or len(text) > _LONGEST_PATH:
        return False
    try:
        return Path(text).expanduser().exists()
    except OSError:  # a name too long for the file system is no file
        return False


def _not_a_source(text: str) -> str:
    close = nearest(text, inputs.BUILTIN_SOURCES) if len(text) < 40 else None
    hint = f"did you mean prompts={close!r}? " if close else ""
    looks_like_file = not any(c.isspace() for c in text) and "." in text
    what = "file not found" if looks_like_file else "not a built-in source or a file"
    return (
        f"prompts={_short(text)}: {what} (built-in: {', '.join(inputs.BUILTIN_SOURCES)}); "
        f"{hint}to analyse this string itself, pass texts={_short(text)}"
    )


def _short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 4] + "...'"


def _source(source: str | Path, limit: int | None) -> Sequence[str]:
    """The CLI's reading of ``--prompts``: lazy corpora first, then built-ins and files."""
    from rope_lens import corpus

    lazy = corpus.open_texts(source, limit)
    return lazy if lazy is not None else inputs.load_texts(source, limit)


def _explicit(texts: Any, limit: int | None, name: str) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    elif not isinstance(texts, Sequence):
        raise InputError(
            f"{name} must be a string or a list of strings, got {type(texts).__name__}"
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(
                f"{name}[{i}] is {type(text).__name__} {_short(text)}: every text must be a string"
            )
    kept = [t for t in texts if t.strip()]
    if not kept:
        raise InputError(f"no non-empty prompts given in {name}=")
    return kept[:limit] if limit else kept


def check_size(name: str, value: Any) -> Any:
    """An integer option (``limit``, ``max_len``, ...) at or above the CLI's minimum; None
    passes where the option may be absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InputError(f"{name} must be an integer, got {type(value).__name__} {_short(value)}")
    low = INPUT_MINIMUMS[name]
    if value < low:
        raise InputError(f"{name} must be at least {low}, got {value}")
    return int(value)


def check_switch(name: str, value: Any) -> bool:
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise InputError(f"{name} is a switch: give True or False, got {type(value).__name__}")
    return bool(value)


def check_layers_arg(layers: Any) -> list[int] | None:
    """``layers`` as a list of ints (or None for every layer); the range is checked against
    the model later (``rope_lens.extract.check_layers``)."""
    if layers is None:
        return None
    if isinstance(layers, str):
        return parse_layers(layers)  # the CLI's syntax: "0,3,5-7,-1" or "all"
    if isinstance(layers, Integral) and not isinstance(layers, bool):
        raise InputError(f"layers={layers} must be a list: layers=[{layers}] (or '{layers}')")
    if not isinstance(layers, Sequence) and not hasattr(layers, "__iter__"):
        raise InputError(
            f"layers must be a list of layer indices, e.g. [0, -1], got {type(layers).__name__}"
        )
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, Integral):
            raise InputError(
                f"layers must hold integers (e.g. [0, -1]), got {type(layer).__name__} "
                f"{_short(layer)}"
            )
        out.append(int(layer))
    return out
