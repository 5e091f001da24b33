"""The CLI reference (``docs/cli.md``), generated from the real argument parsers, and links to
generated outputs.

- ``docs/cli.md`` holds ``rope-lens <command> --help`` for every command between the markers
  below, so the page reads complete on GitHub and in a checkout, not only after
  ``mkdocs build``. ``python docs/hooks/cli_reference.py`` rewrites it; the build (strict: a
  warning fails it) and ``tests/unit/test_cli_reference.py`` refuse a stale copy, so the
  reference cannot drift from the code.
- Links into generated output folders (``../figures/...``, ``../results/...``) point outside
  the site and do not exist on a fresh checkout; they are shown as paths (code spans) instead of
  failing ``mkdocs build --strict``. Links inside ``docs/`` are still checked.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
from contextlib import redirect_stdout
from pathlib import Path

PAGE = Path(__file__).parents[1] / "cli.md"
START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"
WIDTH = "100"  # argparse wraps help to $COLUMNS: fixed, so the text is the same everywhere
OUTPUT_LINK = re.compile(r"\[([^\]]+)\]\(\.\./((?:figures|results|runs)/[^)\s]+)\)")
log = logging.getLogger("mkdocs.hooks.cli_reference")


def _help(parser: argparse.ArgumentParser) -> str:
    out = io.StringIO()
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        with redirect_stdout(out):
            parser.print_help()
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before
    return out.getvalue().rstrip()


def render() -> str:
    """Every command's ``--help``, as Markdown sections."""
    from rope_lens.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = ["## rope-lens", "", "```text", _help(parser), "```", ""]
    for name, p in sub.choices.items():
        parts += [f"## rope-lens {name}", "", "```text", _help(p), "```", ""]
    return "\n".join(parts)


def committed() -> str:
    """The generated part of ``docs/cli.md`` as committed."""
    text = PAGE.read_text(encoding="utf-8")
    return text[text.index(START) + len(START) : text.index(END)].strip("\n")


def write() -> Path:
    """Rewrite the generated part of ``docs/cli.md`` from the parsers."""
    text = PAGE.read_text(encoding="utf-8")
    head, tail = text[: text.index(START) + len(START)], text[text.index(END) :]
    PAGE.write_text(f"{head}\n{render()}\n{tail}", encoding="utf-8")
    return PAGE


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (mkdocs API)
    if START in markdown and committed() != render().strip("\n"):
        log.warning("docs/cli.md is stale: run `python docs/hooks/cli_reference.py`")
    return OUTPUT_LINK.sub(lambda m: f"`{m.group(2)}`", markdown)


if __name__ == "__main__":
    print(f"wrote {write()}")  # noqa: T201 (a script)
