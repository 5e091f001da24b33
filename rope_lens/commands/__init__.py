"""CLI subcommands, one module each.

Every module in ``COMMANDS`` defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. Modules must import only the standard library at the top level (heavy
imports go inside ``run``) so that ``rope-lens --help`` starts instantly.
"""

COMMANDS = [
    "rope_lens.commands.analyze",
    "rope_lens.commands.models",
    "rope_lens.commands.theory",
]
