"""The shell commands the README and docs/ show, read out of their fenced ``bash`` blocks, and
how the smoke test runs each one at a tiny budget (or why it does not).

Test-only (``tests/integration/test_doc_commands.py``): library code never imports this.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import TINY_TRAIN_SETS

ROOT = Path(__file__).parents[1]
DOCUMENTS = (
    ROOT / "README.md",
    ROOT / "figures" / "README.md",
    *sorted((ROOT / "docs").rglob("*.md")),
)
_FENCE = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.S | re.M)
_WRAPPERS = re.compile(r"^(?:\$ )?(?:nice -n \d+ )?(?:[A-Z_]+=\S+ )*(?:\.venv/bin/)?")

# Commands the smoke test does not run, each with the reason (matched against the command).
SKIPPED: tuple[tuple[str, str], ...] = (
    (r"^bash scripts/setup\.sh", "installs the environment (CI runs it first: .ci/run)"),
    (r"-m pytest", "the test suite itself"),
    (r"^(torchrun|accelerate launch)", "multi-process / multi-GPU (tests/dist run the path)"),
    (r"--model (gemma-7b|gemma-2b|llama-3\.1-8b)", "gated hub weights and a GPU"),
    (
        r"analyses/benchmark_",
        "a benchmark, minutes by design; docs/benchmarks.md holds its numbers",
    ),
    (r"\./my-hf-folder|prompts\.jsonl|<commit>", "placeholder paths for the reader's own files"),
    (
        r"--out runs/(t1|t2|tab0|tab1|det)$",
        "the determinism measurement: full cpu-preset trainings compared bit for bit; "
        "tests/unit/test_train_determinism.py runs --deterministic tiny",
    ),
    (
        r"^rope-lens table (?!.*--collect-only)",
        "trains the whole grid (24 runs); tests/unit/test_train_table.py covers it tiny",
    ),
    (r"^rope-lens table .*--collect-only", "summarises the grid the skipped command trains"),
    (
        r"figures/docs_images\.py",
        "PNG export (kaleido) of the docs' images from full results; their layout is "
        "tests/unit/test_figure_layout.py's",
    ),
)

# What each command gets on top of its own flags so that it finishes in seconds (argparse keeps
# the last value of a repeated flag, so these win over the documented values).
_ANALYZE_BUDGET = ["--limit", "1", "--max-len", "32", "--quiet"]
_ANALYSIS_BUDGET = {
    # the first text's first apostrophe is past 32 tokens
    "apostrophe": ["--max-len", "96"],
    "passkey": ["--passkey-lengths", "48", "--passkey-prompts", "1"],
    "massive-values": ["--probe-n", "1", "--probe-len", "32"],
    "sinks": ["--sink-prompts", "1", "--sink-len", "16"],
    "ablation": ["--sweep-points", "2"],
}
TRAIN_BUDGET = TINY_TRAIN_SETS + [
    "--data-source",
    str(ROOT / "tests" / "fixtures" / "train"),
    "--quiet",
]
_SCRIPT_BUDGET = {
    "figures/compute_results.py": ["--limit", "1", "--max-len", "96", "--threads", "1"],
    "figures/paper_figures.py": ["--formats", "html", "--theory", "skip"],
    "figures/theory.py": ["--quick", "--formats", "html"],
    "analyses/findings.py": [
        "--seqs",
        "2",
        "--seq-len",
        "32",
        "--ablation-seqs",
        "1",
        "--threads",
        "1",
    ],
}


@dataclass(frozen=True)
class Command:
    """One documented command: where it is written and its words (wrappers removed)."""

    source: str  # "docs/report.md:12"
    text: str

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text)

    def skipped(self) -> str | None:
        """Why the smoke test does not run it, or None."""
        for pattern, reason in SKIPPED:
            if re.search(pattern, self.text):
                return reason
        return None


def documented_commands() -> list[Command]:
    """Every ``rope-lens`` / ``python`` / launcher command in a fenced bash block, in reading
    order (README, figures/README, docs/), continuation lines joined, comments dropped."""
    out: list[Command] = []
    for doc in DOCUMENTS:
        text = doc.read_text(encoding="utf-8")
        for block in _FENCE.finditer(text):
            first_line = text[: block.start(1)].count("\n") + 1
            for offset, line in _logical_lines(block.group(1)):
                for part in _strip_comment(line).split(" && "):
                    part = _WRAPPERS.sub("", part.strip()).strip()
                    if re.match(r"(rope-lens|python|bash|torchrun|accelerate) ", part + " "):
                        where = f"{doc.relative_to(ROOT)}:{first_line + offset}"
                        out.append(Command(where, part))
    return out


def _logical_lines(block: str) -> list[tuple[int, str]]:
    lines, out, start, parts = block.splitlines(), [], 0, []
    for i, line in enumerate(lines):
        if not parts:
            start = i
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        out.append((start, " ".join([*parts, line])))
        parts = []
    return out


def _strip_comment(line: str) -> str:
    """``cmd --flag  # comment`` -> ``cmd --flag`` (a ``#`` inside a word is kept)."""
    return re.split(r"\s+#\s", " " + line, maxsplit=1)[0].strip()


def budget(argv: list[str]) -> list[str]:
    """``argv`` (without the leading ``rope-lens`` / ``python``) with the tiny budget added,
    and absolute scratch paths (``/tmp/atlas/results``) moved under the working directory, so
    that one run's tables never meet another's."""
    argv = [f"scratch{a}" if a.startswith("/tmp/") else a for a in argv]
    if argv[0] in _SCRIPT_BUDGET:
        return argv + _SCRIPT_BUDGET[argv[0]]
    command = argv[0]
    if command == "analyze":
        analysis = argv[argv.index("--analysis") + 1] if "--analysis" in argv else "band-norm"
        extra = ["--loss-len", "32"] if "--loss-len" in argv else []
        return argv + _ANALYZE_BUDGET + _ANALYSIS_BUDGET.get(analysis, []) + extra
    if command == "report":
        return argv + ["--quiet", "--analyze-arg=--limit=1", "--analyze-arg=--max-len=96"]
    if command == "figures":
        return argv + ["--formats", "html", "--theory", "skip"]
    if command == "theory":
        return argv + ["--quick", "--formats", "html"]
    if command == "compare":
        return argv + ["--max-tokens", "64"]
    if command == "train" and "--dry-run" not in argv:
        return argv + TRAIN_BUDGET
    return argv
