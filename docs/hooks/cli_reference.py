"""MkDocs hooks: the generated CLI reference, and links to generated outputs.

- ``<!-- cli-reference -->`` becomes ``rope-lens <command> --help`` for every command, built from
  the real argument parsers, so the reference cannot drift from the code.
- Links into generated output folders (``../figures/...``, ``../results/...``) point outside
  the site and do not exist on a fresh checkout; they are shown as paths (code spans) instead of
  failing ``mkdocs build --strict``. Links inside ``docs/`` are still checked.
"""

from __future__ import annotations

import argparse
import io
import os
import re
from contextlib import redirect_stdout

MARKER = "<!-- cli-reference -->"
OUTPUT_LINK = re.compile(r"\[([^\]]+)\]\(\.\./((?:figures|results|runs)/[^)\s]+)\)")


def _help(parser: argparse.ArgumentParser) -> str:
    out = io.StringIO()
    os.environ.setdefault("COLUMNS", "100")  # argparse wraps to the terminal width
    with redirect_stdout(out):
        parser.print_help()
    return out.getvalue().rstrip()


def render() -> str:
    from rope_lens.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = ["## rope-lens", "", "```text", _help(parser), "```", ""]
    for name, p in sub.choices.items():
        parts += [f"## rope-lens {name}", "", "```text", _help(p), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (mkdocs API)
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, render())
    return OUTPUT_LINK.sub(lambda m: f"`{m.group(2)}`", markdown)
