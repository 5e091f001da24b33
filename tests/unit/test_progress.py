"""The token progress bar (rope_lens/progress.py): counts real tokens, shows tokens/s and an
ETA, and draws nothing under --quiet, off a TTY, or on rank != 0."""

import io

import pytest
import torch

from rope_lens import progress
from rope_lens.inputs import batches

pytestmark = pytest.mark.usefixtures("one_thread")

# Three rows of 5, 2 and 3 real tokens: 10 real tokens in 15 slots (5 of padding).
SEQS = [[5, 6, 7, 8, 9], [5, 6], [5, 6, 7]]
REAL = sum(len(s) for s in SEQS)


class Tty(io.StringIO):
    """A captured stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def one_batch():
    return list(batches(SEQS, batch_size=3, pad_id=0, has_bos=False))


def drain(stream, **kw) -> int:
    """Run the tracked batches to the end; the tokens counted."""
    counted = 0
    for batch in progress.track(one_batch() * 2, "t", stream=stream, **kw):
        counted += int(batch.attention_mask.sum())
    return counted


def test_counts_real_tokens_not_padding():
    batch = one_batch()[0]
    assert batch.input_ids.numel() == 15  # the padding is there ...
    assert progress.batch_tokens(batch) == REAL  # ... and not counted
    stream = Tty()
    with progress.TokenBar("t", total_batches=2, stream=stream) as bar:
        for b in one_batch() * 2:
            bar.update(progress.batch_tokens(b))
        assert (bar.tokens, bar.batches) == (2 * REAL, 2)
    out = stream.getvalue()
    assert "20.0/20.0" in out and "tok/s" in out  # tokens done / total, and the rate


def test_eta_shown_once_the_total_is_known():
    stream = Tty()
    bar = progress.TokenBar("t", total_batches=4, stream=stream)
    bar._bar.mininterval = 0  # draw every update (tqdm otherwise redraws every 0.1 s)
    bar.update(10)
    line = stream.getvalue().split("\r")[-1]
    assert "10.0/40.0" in line  # the total is estimated from the mean batch so far
    assert "<" in line  # elapsed<remaining: the ETA
    bar.close()


def test_track_skips_resumed_batches_and_counts_after_use():
    stream = Tty()
    it = progress.track(one_batch() * 3, "t", total_batches=3, skip=1, stream=stream)
    list(it)
    out = stream.getvalue()
    assert (
        "20.0/20.0" in out
    )  # 2 batches of 10 counted; the skipped one neither counted nor expected


@pytest.mark.parametrize(
    "stream, show",
    [(Tty(), False), (io.StringIO(), True)],
    ids=["quiet", "not-a-tty"],
)
def test_silent_under_quiet_and_off_a_tty(stream, show):
    assert drain(stream, show=show) == 2 * REAL  # the batches pass through unchanged
    assert stream.getvalue() == ""


def test_silent_on_captured_stderr(capsys):
    # Default stream is sys.stderr, which pytest's capture makes a non-TTY: as in a log file.
    assert drain(None) == 2 * REAL
    assert capsys.readouterr().err == ""


def test_rank_other_than_zero_never_draws(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    stream = Tty()
    assert not progress.enabled(True, stream)
    drain(stream)
    assert stream.getvalue() == ""
    monkeypatch.setenv("RANK", "0")
    assert progress.enabled(True, stream)


def test_one_bar_in_tokens_for_an_analysis_loop(tiny_lm, monkeypatch):
    """extract.run_batches draws one bar, in tokens; the engine's own batch bar stays off."""
    from rope_lens.extract import run_batches

    lm = tiny_lm("llama")
    stream = Tty()
    monkeypatch.setattr("sys.stderr", stream)
    seqs = [[1, 2, 3, 4], [1, 2], [1, 2, 3]]
    made = list(batches(seqs, batch_size=2, pad_id=0, has_bos=False))
    run_batches(lm, made, on_logits=lambda logits, b: None, total=len(made), desc="tiny")
    out = stream.getvalue()
    # 9 real tokens over 2 batches (3 slots of padding)
    assert "9.00/9.00" in out and "tok/s" in out
    assert "batch" not in out  # no second, batch-counting bar
    stream.truncate(0)
    run_batches(lm, made, on_logits=lambda logits, b: None, total=len(made), progress=False)
    assert stream.getvalue() == ""
    assert torch.is_tensor(made[0].input_ids)


def test_off_a_tty_a_long_job_prints_plain_lines(monkeypatch):
    """`train` was silent for minutes in a log (nohup, CI): off a TTY it writes a plain line
    every ``lines_every`` seconds and one at the end; none under --quiet or on rank != 0."""
    clock = iter(range(0, 1000, 10))  # each monotonic() call: 10 s later
    monkeypatch.setattr(progress.time, "monotonic", lambda: float(next(clock)))
    stream = io.StringIO()
    bar = progress.TokenBar("train", total=400, stream=stream, lines_every=25.0)
    for _ in range(4):
        bar.update(100)
        bar.set_postfix(loss="3.210")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in stream.getvalue()  # one timed line (30 s) + the last
    assert lines[-1].startswith("train: 400 tokens of 400 (100%)") and "loss 3.210" in lines[-1]
    assert "tokens/s" in lines[0] and "ETA" in lines[0]
    quiet = io.StringIO()
    progress.TokenBar("train", total=400, stream=quiet, lines_every=25.0, show=False).close()
    monkeypatch.setenv("RANK", "1")
    other = io.StringIO()
    with progress.TokenBar("train", total=400, stream=other, lines_every=0.0) as b:
        b.update(100)
    assert quiet.getvalue() == "" == other.getvalue()
