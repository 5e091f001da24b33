"""Regenerate every theory figure and the computed Table 1 with one command.

    python figures/theory.py [--out results/theory] [--formats png,svg,pdf] [--quick]

HTML is always written; static formats only when kaleido works. The same thing is available as
``rope-lens theory`` (``rope_lens/commands/theory.py``, which holds the recipe).
"""

from __future__ import annotations

import argparse
import sys

from rope_lens.commands import theory
from rope_lens.errors import RopeLensError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=theory.HELP)
    theory.add_arguments(parser)
    try:
        return theory.run(parser.parse_args(argv))
    except RopeLensError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
