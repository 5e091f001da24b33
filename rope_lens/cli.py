"""The ``rope-lens`` command line: a thin dispatcher over ``rope_lens.commands``.

Failures the user can fix end in one line, ``error: ...``, and exit status 2: every
``RopeLensError``, and any ``OSError`` (a full disk, a read-only folder), named with its path.
``--debug`` keeps the traceback. SIGTERM is handled like Ctrl-C: running analyses flush their
resume checkpoint and say what was kept.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from rope_lens.commands import COMMANDS
from rope_lens.errors import Terminated


class Parser(argparse.ArgumentParser):
    """argparse with the package's error style: one ``error:`` line (exit 2) naming the
    nearest valid choice, instead of the full usage (60 lines for ``analyze``) and no hint."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {suggest_choice(message)}\n")


_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)$")


def suggest_choice(message: str) -> str:
    """argparse's "invalid choice" message with the nearest choice named first."""
    from rope_lens.request import nearest

    m = _INVALID_CHOICE.search(message)
    if m is None:
        return f"{message} (--help lists every option)"
    choices = [c.strip().strip("'") for c in m.group(2).split(",")]
    close = nearest(m.group(1), choices)
    hint = f"did you mean {close!r}? " if close else ""
    return f"{message[: m.start()]}invalid choice {m.group(1)!r}; {hint}choose from {', '.join(choices)}"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="rope-lens",
        description="Find out how language models use Rotary Positional Encodings.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS:
        module = importlib.import_module(module_name)
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def describe_os_error(err: OSError) -> str:
    """One line for an OSError: what, where, and what to do."""
    import errno

    where = " -> ".join(str(p) for p in (err.filename, err.filename2) if p is not None)
    what = err.strerror or str(err) or type(err).__name__
    hint = {
        errno.ENOSPC: "free some space (earlier results are intact) and rerun",
        errno.EDQUOT: "free some space (earlier results are intact) and rerun",
        errno.EROFS: "choose a writable --out",
        errno.EACCES: "check the permissions, or choose another --out",
        errno.EPERM: "check the permissions, or choose another --out",
    }.get(err.errno or 0, "check the path and rerun")
    return f"{what}{': ' + where if where else ''}; {hint}"


def _on_sigterm(signum, frame) -> None:  # pragma: no cover - exercised through a subprocess
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from rope_lens.errors import RopeLensError

    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (e.g. called from a worker thread)
        pass
    try:
        return int(args._run(args) or 0)
    except RopeLensError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if args.debug:
            raise
        print(f"error: {describe_os_error(err)}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated: finished results are saved; rerun to resume", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted: finished results are saved; rerun to resume", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
