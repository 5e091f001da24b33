"""CLI subcommands, one module each.

Every module in ``COMMANDS`` defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. Modules must import only the standard library at the top level (heavy
imports go inside ``run``) so that ``rope-lens --help`` starts instantly.
"""

COMMANDS = [
    "rope_lens.commands.analyze",
    "rope_lens.commands.models",
    "rope_lens.commands.theory",
    "rope_lens.commands.train",
    "rope_lens.commands.table",
    "rope_lens.commands.report",
    "rope_lens.commands.figures",
    "rope_lens.commands.compare",
]
