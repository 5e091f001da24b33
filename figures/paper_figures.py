"""Draw every computable paper figure and table from saved results (PDF, PNG, SVG, HTML).

    python figures/paper_figures.py [--results results] [--runs runs/table-cpu] \
        [--out figures/out] [--formats html,png,svg,pdf] [--theory full|quick|skip]

The same as ``rope-lens figures`` (``rope_lens/commands/figures.py`` holds the logic); run
``figures/compute_results.py`` first. ``figures/README.md`` maps each output to the paper.
"""

from __future__ import annotations

import argparse
import logging
import sys

from rope_lens.commands import figures
from rope_lens.errors import RopeLensError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=figures.HELP)
    figures.add_arguments(parser)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return figures.run(parser.parse_args(argv))
    except RopeLensError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
