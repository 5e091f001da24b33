"""`rope-lens train` / `rope-lens table` on bad input: one `error:` line, exit 2, no traceback."""

from pathlib import Path

import pytest
import torch

from rope_lens import cli
from tests.helpers import TINY_TRAIN_SETS, fails_in_one_line

FIXTURE = Path(__file__).parents[1] / "fixtures" / "train"
TINY = TINY_TRAIN_SETS


@pytest.fixture(autouse=True)
def commands(monkeypatch):
    # Until rope_lens/commands/__init__.py registers them, add the two commands for the test.
    extra = ["rope_lens.commands.train", "rope_lens.commands.table"]
    monkeypatch.setattr(cli, "COMMANDS", [c for c in cli.COMMANDS if c not in extra] + extra)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_fails_cleanly = fails_in_one_line


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--encoding", "alibi"], "unknown encoding"),
        (["--encoding", "1.5-rope"], "p must be in [0, 1]"),
        (["--encoding=-0.25-rope-partial"], "p must be in [0, 1]"),
        (["--set", "model.head_dim=31"], "head_dim must be even"),
        (["--config", "gpt-5"], "unknown config"),
    ],
)
def test_bad_config(capsys, argv, match):
    _fails_cleanly(capsys, ["train", "--dry-run", *argv], match)


def test_bad_table_encoding(capsys, tmp_path):
    argv = ["table", "--collect-only", "--out", str(tmp_path), "--encodings", "nope", "2-rope"]
    _fails_cleanly(capsys, argv, "p must be in [0, 1]")


def test_missing_data_cache(capsys, tmp_path):
    argv = ["train", "--data-source", str(FIXTURE), "--data-root", str(tmp_path / "none")]
    argv += ["--no-build-data", "--out", str(tmp_path / "run"), "--quiet", *TINY]
    _fails_cleanly(capsys, argv, "is missing")


def test_corrupt_and_mismatched_checkpoint(capsys, tmp_path):
    base = ["train", "--data-source", str(FIXTURE), "--data-root", str(tmp_path / "cache")]
    base += ["--out", str(tmp_path / "run"), "--quiet", *TINY]
    assert cli.main([*base, "--encoding", "0.75-rope"]) == 0
    capsys.readouterr()
    _fails_cleanly(capsys, [*base, "--encoding", "nope"], "different run")
    weights = tmp_path / "run" / "checkpoints" / "step-00000002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    assert cli.main([*base, "--encoding", "0.75-rope"]) == 0  # finished: a no-op, not resumed
    (tmp_path / "run" / "results.json").unlink()  # unfinished: resuming reads the checkpoint
    _fails_cleanly(capsys, [*base, "--encoding", "0.75-rope"], "corrupt")
