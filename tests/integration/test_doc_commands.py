"""Every command the README and docs/ show runs: read out of their ``bash`` blocks and run in
reading order, as a reader following the docs would, at a tiny budget (``--limit 1
--max-len 32`` and the like: ``tests/doc_commands.py``), in a scratch working directory.

The packaged models are swapped for tiny random models of the same family (the flags, the
pipeline and the outputs are what is checked here; the real models' numbers are checked by the
``slow`` tests), so the whole walk takes about a minute. Commands that cannot run here (setup,
gated GPU models, benchmarks, multi-process launchers, placeholders) are listed with the reason;
``figures/compute_results.py`` and ``analyses/findings.py`` crashed unseen before this ran them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import time
from pathlib import Path

import pytest

from tests.doc_commands import ROOT, budget, documented_commands

# The packaged registry names, each served by a tiny random model of its family, deep and wide
# enough for the layers and heads the docs name (`--layers 11,16 --head 6`, `--layers 5`).
STAND_INS = {
    "smollm2-135m": (
        "llama",
        dict(hidden_size=144, num_hidden_layers=17, num_attention_heads=9, num_key_value_heads=3),
    ),
    "gemma3-270m": (
        "gemma3",
        dict(
            num_hidden_layers=6,
            num_attention_heads=4,
            layer_types=["sliding_attention"] * 5 + ["full_attention"],
        ),
    ),
    "qwen2.5-coder-0.5b": ("qwen2", {}),
}


def test_the_docs_show_commands_and_skip_few():
    commands = documented_commands()
    skipped = [c for c in commands if c.skipped()]
    assert len(commands) >= 60
    assert len(skipped) <= len(commands) // 3, [c.text for c in skipped]
    # The two scripts that broke unseen are among those run.
    run = {c.argv[1] for c in commands if c.argv[0] == "python" and not c.skipped()}
    assert {"figures/compute_results.py", "analyses/findings.py"} <= run


@pytest.fixture
def tiny_registry(tmp_path_factory, monkeypatch):
    """Registry names load tiny models: the conversion of a packaged GGUF is replaced by a
    tiny folder of the same family and shape."""
    from rope_lens.models import packaged
    from rope_lens.models.tiny import tiny_model_dir

    root = tmp_path_factory.mktemp("stand-ins")
    folders = {
        name: tiny_model_dir(arch, root / name, **shape)
        for name, (arch, shape) in STAND_INS.items()
    }
    # Where a converted model is loaded from, and where readers look for one (tables of a
    # registry model are checked against that folder's identity without loading it).
    monkeypatch.setattr(packaged, "ensure_converted", lambda entry: folders[entry.name])
    monkeypatch.setattr(packaged, "converted_dir", lambda entry: folders[entry.name])
    monkeypatch.setattr(packaged, "is_converted", lambda entry: entry.name in folders)


def _script(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(argv: list[str]) -> tuple[int, str]:
    """One command in this process; its exit status and output."""
    from rope_lens import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            if argv[0] == "rope-lens":
                code = cli.main(budget(argv[1:]))
            else:  # python SCRIPT ...
                args = budget(argv[1:])
                code = _script(args[0]).main(args[1:]) or 0
        except SystemExit as stop:  # argparse
            code = stop.code if isinstance(stop.code, int) else 2
        except Exception as err:  # noqa: BLE001 - reported with the command below
            code, _ = 1, out.write(f"{type(err).__name__}: {err}")
    return int(code), out.getvalue()


def test_every_documented_command_runs(tiny_registry, one_thread, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["rope-lens"])
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "prompts").symlink_to(ROOT / "figures" / "prompts")
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    failed, ran, skipped, timings = [], 0, [], []
    seen: set[str] = set()
    for command in documented_commands():
        why = command.skipped()
        if why:
            skipped.append(f"{command.source}: {command.text}  ({why})")
            continue
        if command.text in seen:  # shown twice (README and a docs page): run once
            continue
        seen.add(command.text)
        start = time.perf_counter()
        code, output = _run(command.argv)
        timings.append((time.perf_counter() - start, command.text))
        ran += 1
        if code != 0:
            tail = "\n    ".join(output.strip().splitlines()[-6:])
            failed.append(f"{command.source}: {command.text}\n    exit {code}: {tail}")
    print("skipped:\n" + "\n".join(skipped))
    print("slowest:\n" + "\n".join(f"{t:5.1f} s  {c}" for t, c in sorted(timings)[-8:]))
    assert not failed, f"{len(failed)} of {ran} documented commands failed:\n" + "\n".join(failed)
