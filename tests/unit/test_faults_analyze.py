"""Fault injection for `rope-lens analyze` and its saved tables (issue 11).

Each test injects one fault (a second model with the same folder name, weights that changed,
a torn or truncated file, corrupt weights, a full or read-only disk, a kill at a chosen batch)
and checks that the run ends in a correct table or a one-line error, with earlier results
intact.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from rope_lens import cli, io
from tests.helpers import one_error_line

SMALL = ["--layers", "0", "--max-tokens", "60", "--batch-size", "2", "--no-progress"]


LINES = [f"Line {i}: it's a short text about positions and rotations." for i in range(40)]
PROMPTS: list[str] = []


@pytest.fixture(autouse=True, scope="module")
def _prompts(tmp_path_factory):
    """Forty short texts: many small batches, and no truncation warning in stderr."""
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(LINES) + "\n")
    PROMPTS[:] = ["--prompts", str(path)]


def _analyze(capsys, *argv):
    extra = [] if "--prompts" in argv else PROMPTS
    code = cli.main(["analyze", *argv, *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


_one_line = one_error_line


@pytest.fixture
def model(tiny_dirs, tmp_path):
    """A private copy of the tiny llama folder (tests change its weights)."""
    return Path(shutil.copytree(tiny_dirs["llama"], tmp_path / "runs" / "a" / "seed0"))


def _perturb(folder: Path, scale: float = 3.0) -> None:
    """Change the weights the way more training would (same names, shapes and file size)."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    weights = load_file(path)
    weights = {k: v * scale if "q_proj" in k else v for k, v in weights.items()}
    save_file(weights, path, metadata={"format": "pt"})


# --- silently wrong tables -------------------------------------------------------------------


def test_same_folder_name_never_shares_results(tiny_dirs, tmp_path, capsys, monkeypatch):
    """runs/a/seed0 and runs/b/seed0: separate default folders, and under one --out the
    second model is recomputed, not 'up to date' with the first one's numbers."""
    from rope_lens.request import default_results_dir

    monkeypatch.chdir(tmp_path)
    a = Path(shutil.copytree(tiny_dirs["llama"], tmp_path / "runs/a/seed0"))
    b = Path(shutil.copytree(tiny_dirs["llama"], tmp_path / "runs/b/seed0"))
    _perturb(b)
    assert default_results_dir(str(a)) != default_results_dir(str(b))
    assert default_results_dir("smollm2-135m") == Path("results/smollm2-135m")
    out = tmp_path / "out"
    assert _analyze(capsys, "--model", str(a), "--out", str(out), *SMALL)[0] == 0
    first = pd.read_parquet(out / "band_norm.parquet")
    code, stdout, _ = _analyze(capsys, "--model", str(b), "--out", str(out), *SMALL)
    assert code == 0 and "up to date" not in stdout
    second, meta = io.load_table(out / "band_norm.parquet")
    assert meta["folder"] == os.path.realpath(b)
    assert not (first.mean_norm.values == second.mean_norm.values).all()
    # default folders: each model gets its own
    assert _analyze(capsys, "--model", str(a), *SMALL)[0] == 0
    assert _analyze(capsys, "--model", str(b), *SMALL)[0] == 0
    assert (default_results_dir(str(a)) / "band_norm.parquet").exists()
    assert (default_results_dir(str(b)) / "band_norm.parquet").exists()


def test_run_folder_that_kept_training_is_recomputed(model, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert _analyze(capsys, "--model", str(model), "--out", out, *SMALL)[0] == 0
    assert "up to date" in _analyze(capsys, "--model", str(model), "--out", out, *SMALL)[1]
    before = pd.read_parquet(tmp_path / "out" / "band_norm.parquet")
    _perturb(model)
    code, stdout, _ = _analyze(capsys, "--model", str(model), "--out", out, *SMALL)
    assert code == 0 and "up to date" not in stdout
    after = pd.read_parquet(tmp_path / "out" / "band_norm.parquet")
    q = after.kind == "q"
    torch.testing.assert_close(
        torch.tensor(after.mean_norm[q].values),
        torch.tensor(before.mean_norm[q].values) * 3,
        rtol=1e-5,
        atol=0,
    )


def _interrupt_after(monkeypatch, n_batches: int):
    """Make the batch stream raise KeyboardInterrupt after ``n_batches`` batches (a Ctrl-C at
    a chosen point)."""
    from rope_lens import inputs

    real = inputs.batches

    def dying(*a, **k):
        for i, b in enumerate(real(*a, **k)):
            if i == n_batches:
                raise KeyboardInterrupt
            yield b

    monkeypatch.setattr(inputs, "batches", dying)
    return real


def test_checkpoint_is_never_reused_under_other_options(model, tmp_path, capsys, monkeypatch):
    """Killed with --batch-size 2, resumed with --batch-size 4: the table equals an
    uninterrupted --batch-size 4 run (the old checkpoint, keyed by tokens only, was reused)."""
    from rope_lens import inputs

    out = str(tmp_path / "out")
    args = ["--model", str(model), "--out", out, "--layers", "0", "--no-progress"]
    args += ["--max-tokens", "400", "--checkpoint-every", "1e-9"]
    real = _interrupt_after(monkeypatch, 2)
    assert _analyze(capsys, *args, "--batch-size", "2")[0] == 130
    assert (tmp_path / "out" / ".band_norm.partial.safetensors").exists()
    monkeypatch.setattr(inputs, "batches", real)
    assert _analyze(capsys, *args, "--batch-size", "4")[0] == 0
    resumed = pd.read_parquet(tmp_path / "out" / "band_norm.parquet")
    fresh_out = str(tmp_path / "fresh")
    fresh_args = [a if a != out else fresh_out for a in args]
    assert _analyze(capsys, *fresh_args, "--batch-size", "4")[0] == 0
    fresh = pd.read_parquet(tmp_path / "fresh" / "band_norm.parquet")
    assert set(resumed.n_tokens) == {400} == set(fresh.n_tokens)
    torch.testing.assert_close(
        torch.tensor(resumed.mean_norm.values), torch.tensor(fresh.mean_norm.values)
    )


def test_checkpoint_of_another_model_is_ignored(model, tiny_dirs, tmp_path):
    """Same tokenizer, same tokens, another model: the identity differs, so no resume."""
    from rope_lens.resume import Checkpointer

    path = tmp_path / ".p.safetensors"
    Checkpointer(path, "identity-of-model-a").maybe_save(3, {"x": torch.ones(2)}, {}, force=True)
    assert Checkpointer(path, "identity-of-model-b").load() is None
    assert Checkpointer(path, "identity-of-model-a").load()[0] == 3


def test_interrupted_resume_then_finish_matches_uninterrupted(model, tmp_path, capsys, monkeypatch):
    """Ctrl-C at batch 3 flushes a checkpoint (whatever the interval) and says what was kept;
    the rerun resumes and equals an uninterrupted run."""
    from rope_lens import inputs

    out = str(tmp_path / "out")
    args = ["--model", str(model), "--out", out, "--layers", "0", "--no-progress"]
    args += ["--max-tokens", "400", "--batch-size", "2", "--checkpoint-every", "3600"]
    real = _interrupt_after(monkeypatch, 3)
    code, _, err = _analyze(capsys, *args)
    assert code == 130 and "kept 3 finished batches" in err
    monkeypatch.setattr(inputs, "batches", real)
    code, _, err = _analyze(capsys, *args)
    assert code == 0
    resumed = pd.read_parquet(tmp_path / "out" / "band_norm.parquet")
    assert not (tmp_path / "out" / ".band_norm.partial.safetensors").exists()
    fresh_args = [a if a != out else str(tmp_path / "fresh") for a in args]
    assert _analyze(capsys, *fresh_args)[0] == 0
    fresh = pd.read_parquet(tmp_path / "fresh" / "band_norm.parquet")
    torch.testing.assert_close(
        torch.tensor(resumed.mean_norm.values), torch.tensor(fresh.mean_norm.values)
    )


def test_checkpoint_sums_and_counts_are_one_file(tmp_path):
    """Counts live in the safetensors header: there is no second file to tear from it."""
    from safetensors import safe_open

    from rope_lens.resume import Checkpointer

    path = tmp_path / ".p.safetensors"
    ck = Checkpointer(path, "k")
    ck.maybe_save(5, {"x": torch.ones(2)}, {"x": 7}, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".p.safetensors"]
    with safe_open(path, "pt") as fh:
        meta = json.loads(fh.metadata()["rope_lens"])
    assert meta["batches_done"] == 5 and meta["extra"] == {"x": 7}
    # a stale sidecar from the old two-file format cannot change what is resumed
    path.with_suffix(".json").write_text(json.dumps({"inputs_sha256": "k", "batches_done": 99}))
    assert Checkpointer(path, "k").load()[0] == 5


def test_table_data_and_metadata_are_one_file(tmp_path, monkeypatch):
    """A kill after the parquet rename and before the .json copy: the table still reads with
    its own metadata, never the previous run's."""
    from rope_lens import atomic

    path = io.save_table(pd.DataFrame({"a": [1.0]}), tmp_path / "t", {"identity": "old"})
    real = atomic.write_text

    def killed(p, text, **k):
        if str(p).endswith(".json"):
            raise KeyboardInterrupt  # the process dies here
        return real(p, text, **k)

    monkeypatch.setattr(atomic, "write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        io.save_table(pd.DataFrame({"a": [1.0, 2.0]}), path, {"identity": "new"})
    df, meta = io.load_table(path)
    assert len(df) == 2 and meta["identity"] == "new" and meta["rows"] == 2
    assert json.loads(path.with_suffix(".json").read_text())["identity"] == "old"


def test_truncated_or_short_table_is_never_up_to_date(model, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--model", str(model), "--out", str(out), *SMALL]
    assert _analyze(capsys, *args)[0] == 0
    table = out / "band_norm.parquet"
    good = pd.read_parquet(table)
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])  # truncated
    code, stdout, _ = _analyze(capsys, *args)
    assert code == 0 and "up to date" not in stdout and len(pd.read_parquet(table)) == len(good)
    # half the rows under the full table's metadata (e.g. a legacy table beside its sidecar)
    good.head(len(good) // 2).to_parquet(table, index=False)
    meta = json.loads(table.with_suffix(".json").read_text())
    assert io.reusable(table, meta["identity_fields"], ["mean_norm"]) is not None
    code, stdout, _ = _analyze(capsys, *args)
    assert code == 0 and "up to date" not in stdout and len(pd.read_parquet(table)) == len(good)
    # report refuses the short table with one line rather than drawing half of it
    good.head(len(good) // 2).to_parquet(table, index=False)
    code = cli.main(["report", str(out), "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 2 and "incomplete" in err


def test_corrupt_weights_are_refused_and_earlier_table_kept(model, tmp_path, capsys):
    """Random bytes inside the weights (header intact) give NaN: one line, nothing saved."""
    out = tmp_path / "out"
    args = ["--model", str(model), "--out", str(out), *SMALL]
    assert _analyze(capsys, *args)[0] == 0
    before = (out / "band_norm.parquet").read_bytes()
    path = model / "model.safetensors"
    data = bytearray(path.read_bytes())
    header = int.from_bytes(data[:8], "little")
    data[8 + header :] = b"\xff" * (len(data) - 8 - header)
    path.write_bytes(bytes(data))
    code, _, err = _analyze(capsys, *args)
    assert code == 2
    _one_line(err.split("\n", 1)[-1] if err.startswith("WARNING") else err, "non-finite values")
    assert (out / "band_norm.parquet").read_bytes() == before


# --- one-line errors -------------------------------------------------------------------------


def test_full_disk_at_save_is_one_line_and_keeps_earlier_results(
    model, tmp_path, capsys, monkeypatch
):
    from rope_lens import atomic

    out = tmp_path / "out"
    args = ["--model", str(model), "--out", str(out), *SMALL]
    assert _analyze(capsys, *args)[0] == 0
    before = (out / "band_norm.parquet").read_bytes()

    def full(path, write, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(atomic, "write_file", full)
    code, _, err = _analyze(capsys, *args, "--force")
    _one_line(err, "No space left on device")
    assert code == 2 and "earlier results are intact" in err
    assert (out / "band_norm.parquet").read_bytes() == before
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


def test_unwritable_out_fails_before_loading_the_model(model, tmp_path, capsys, monkeypatch):
    """Read-only --out (injected: root ignores permissions) is found before any work."""
    import tempfile

    from rope_lens import pipeline

    def no_model(req):
        raise AssertionError("the model was loaded before checking --out")

    monkeypatch.setattr(pipeline, "load_for", no_model)
    real = tempfile.TemporaryFile

    def read_only(*a, dir=None, **k):
        if dir is not None and Path(dir).name == "ro":
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    code, _, err = _analyze(capsys, "--model", str(model), "--out", str(tmp_path / "ro"), *SMALL)
    assert code == 2
    _one_line(err, "Read-only file system")
    (tmp_path / "afile").write_text("x")
    code, _, err = _analyze(capsys, "--model", str(model), "--out", str(tmp_path / "afile"), *SMALL)
    assert code == 2
    _one_line(err, "is a file")


def test_failing_checkpoint_write_warns_and_carries_on(
    model, tmp_path, capsys, monkeypatch, caplog
):
    from rope_lens import resume

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(resume, "save_file", full)
    out = tmp_path / "out"
    args = ["--model", str(model), "--out", str(out), *SMALL, "--checkpoint-every", "1e-9"]
    code, _, _ = _analyze(capsys, *args)
    assert code == 0 and (out / "band_norm.parquet").exists()
    assert "could not write the resume checkpoint" in caplog.text


@pytest.mark.parametrize(
    "fault,message",
    [
        ("tokenizer", "cannot load"),
        ("safetensors", "cannot load"),
        ("sidecar", None),
    ],
)
def test_corrupt_inputs_are_one_line(model, tmp_path, capsys, fault, message):
    out = tmp_path / "out"
    args = ["--model", str(model), "--out", str(out), *SMALL]
    if fault == "tokenizer":
        (model / "tokenizer.json").write_text("{garbage")
    elif fault == "safetensors":
        path = model / "model.safetensors"
        data = bytearray(path.read_bytes())
        data[10:30] = b"x" * 20
        path.write_bytes(bytes(data))
    else:  # a garbage readable copy: the parquet's own metadata is trusted
        assert _analyze(capsys, *args)[0] == 0
        (out / "band_norm.json").write_bytes(b"\x00garbage{")
    code, stdout, err = _analyze(capsys, *args)
    if message is None:
        assert code == 0 and "up to date" in stdout
    else:
        assert code == 2
        _one_line(err, message)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--prompts", "LATIN1"], "not UTF-8"),
        (["--prompts", "DIR"], "is a folder"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--limit", "0"], "--limit must be at least 1"),
        (["--limit", "-1"], "--limit must be at least 1"),
        (["--max-tokens", "0"], "--max-tokens must be at least 1"),
        (["--analysis", "ablation", "--sweep-points", "0"], "--sweep-points must be at least 1"),
        (["--head", "3"], "--head does not apply to band-norm"),
        (["--band", "0:8", "--analysis", "heads"], "--band does not apply to heads"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--model", "smollm2-135m", "--revision", "main"], "--revision does not apply"),
        (["--model", "smolm2"], "did you mean"),
    ],
)
def test_bad_options_fail_before_any_work(model, tmp_path, capsys, monkeypatch, argv, message):
    from rope_lens import pipeline

    def no_model(req):
        raise AssertionError("the model was loaded before checking the options")

    monkeypatch.setattr(pipeline, "load_for", no_model)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café\n".encode("latin-1"))
    (tmp_path / "dir").mkdir()
    argv = [
        str(latin) if a == "LATIN1" else str(tmp_path / "dir") if a == "DIR" else a for a in argv
    ]
    if "--model" not in argv:
        argv += ["--model", str(model)]
    code, _, err = _analyze(capsys, *argv, "--out", str(tmp_path / "o"), "--no-progress")
    assert code == 2
    _one_line(err, message)


def test_other_os_errors_are_one_line_with_the_path(capsys, monkeypatch):
    from rope_lens.commands import models

    def boom(args):
        raise PermissionError(errno.EACCES, "Permission denied", "/some/where")

    monkeypatch.setattr(models, "run", boom)
    assert cli.main(["models"]) == 2
    _one_line(capsys.readouterr().err, "Permission denied: /some/where")
    with pytest.raises(PermissionError):
        cli.main(["--debug", "models"])


# --- concurrency and signals -----------------------------------------------------------------


def test_locked_output_folder_fails_clearly(model, tmp_path, capsys):
    from rope_lens.lock import folder_lock

    out = tmp_path / "out"
    with folder_lock(out, "analyze heads"):
        code, _, err = _analyze(capsys, "--model", str(model), "--out", str(out), *SMALL)
    assert code == 2
    _one_line(err, "in use by pid")
    assert _analyze(capsys, "--model", str(model), "--out", str(out), *SMALL)[0] == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_flushes_a_checkpoint_then_resumes(model, tmp_path, sig):
    """A real process gets SIGTERM / SIGINT (sent by itself after batch 2, so no timing):
    it saves a checkpoint, says what was kept, and the rerun resumes to the full table."""
    out = tmp_path / "out"
    script = f"""
import os, signal, sys
from rope_lens import cli, inputs
real = inputs.batches
def batches(*a, **k):
    for i, b in enumerate(real(*a, **k)):
        if i == 2:
            os.kill(os.getpid(), {int(sig)})
        yield b
inputs.batches = batches
sys.exit(cli.main(sys.argv[1:]))
"""
    args = ["analyze", "--model", str(model), "--out", str(out), "--layers", "0", *PROMPTS]
    args += ["--max-tokens", "300", "--batch-size", "2", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env
    )
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), proc.stderr
    assert "kept 2 finished batches" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / ".band_norm.partial.safetensors").exists()
    proc = subprocess.run(
        [sys.executable, "-m", "rope_lens.cli", *args], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0 and "resuming from" in proc.stderr
    assert set(pd.read_parquet(out / "band_norm.parquet").n_tokens) == {300}


# --- inputs ----------------------------------------------------------------------------------


def test_text_files_split_on_newlines_only_and_drop_the_bom(tmp_path):
    from rope_lens import inputs

    path = tmp_path / "p.txt"
    path.write_bytes("\ufeffone\u2028still one\x0cand\x85more\r\ntwo\n".encode())
    assert inputs.load_texts(path) == ["one\u2028still one\x0cand\x85more", "two"]


def test_small_token_budget_tokenizes_few_texts(tiny_lm):
    from rope_lens import inputs

    lm = tiny_lm("llama")
    calls = []

    def tok(text, **k):
        calls.append(text)
        return lm.tokenizer(text, **k)

    seqs = inputs.tokenize(tok, ["abcdefghij"] * 1000, lm.bos_token_id, 64, max_tokens=25)
    assert len(calls) == 3 and sum(len(s) - 1 for s in seqs) >= 25

    def counted(seqs):
        out = []
        for b in inputs.batches(seqs, 2, 3, True, max_tokens=25):
            out += b.input_ids[b.count_mask].tolist()
        return out

    eager = inputs.tokenize(lm.tokenizer, ["abcdefghij"] * 10, lm.bos_token_id, 64)
    assert counted(seqs) == counted(eager) and len(counted(seqs)) == 25


def test_library_never_imports_the_cli():
    """Walk every module of rope_lens outside commands/ and cli: none imports them."""
    import ast
    import pkgutil

    import rope_lens

    root = Path(rope_lens.__file__).parent
    bad = []
    for info in pkgutil.walk_packages([str(root)], "rope_lens."):
        name = info.name
        if name.startswith(("rope_lens.commands", "rope_lens.cli")):
            continue
        rel = name.removeprefix("rope_lens.").replace(".", "/")
        path = root / (rel + "/__init__.py" if info.ispkg else rel + ".py")
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if any(m.startswith(("rope_lens.commands", "rope_lens.cli")) for m in mods):
                bad.append(f"{name}:{node.lineno}")
    assert bad == []


# --- report ----------------------------------------------------------------------------------


def test_report_fails_at_once_on_a_misspelled_model(tmp_path, capsys, monkeypatch):
    from rope_lens import pipeline

    def no_model(req):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(pipeline, "load_for", no_model)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report", "--model", "smolm2"]) == 2
    _one_line(capsys.readouterr().err, "did you mean smollm2-135m")
    assert not (tmp_path / "results").exists()


def test_report_out_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "dir").mkdir()
    assert cli.main(["report", "--model", "smollm2-135m", "--out", str(tmp_path / "dir")]) == 2
    _one_line(capsys.readouterr().err, "is a folder")


def test_report_runs_missing_tables_and_drops_options_they_ignore(model, tmp_path, capsys):
    """`--analyze-arg=--head=1` is meant for the head analyses: band-norm runs without it;
    a rerun finds the table current and does not recompute it."""
    results = tmp_path / "res"
    argv = ["report", "--model", str(model), "--results", str(results), "--analyses", "band-norm"]
    argv += ["--analyze-arg=--max-tokens=40", "--analyze-arg=--head=1", *PROMPTS]
    argv = [a for a in argv if a != "--prompts" and a != PROMPTS[-1]]
    argv += [f"--analyze-arg=--prompts={PROMPTS[-1]}", "--out", str(tmp_path / "r.html")]
    assert cli.main(argv) == 0, capsys.readouterr().err
    stamp = (results / "band_norm.parquet").stat().st_mtime_ns
    assert cli.main(argv) == 0
    assert (results / "band_norm.parquet").stat().st_mtime_ns == stamp
    _perturb(model)  # the run kept training: the table is stale
    assert cli.main(argv) == 0
    assert (results / "band_norm.parquet").stat().st_mtime_ns != stamp


def test_generic_resumable_reducers_resume_exactly(tmp_path):
    """The protocol any analysis can adopt: two reducers, killed after batch 3, resumed."""
    from rope_lens import resume

    class Sum:
        def __init__(self, scale):
            self.scale, self.total, self.n = scale, torch.zeros(3, dtype=torch.float64), 0

        def update(self, x):
            self.total += x * self.scale
            self.n += 1

        def state(self):
            return {"total": self.total}, {"n": self.n}

        def load_state(self, tensors, extra):
            self.total, self.n = tensors["total"].clone(), extra["n"]

    data = [torch.arange(3, dtype=torch.float64) + i for i in range(7)]

    def run(reducers, options, die_at=None):
        skip, after, finished = resume.resumable(options, reducers)
        for i, x in enumerate(data):
            if i < skip:
                continue
            if i == die_at:
                raise KeyboardInterrupt
            for r in reducers:
                r.update(x)
            if after:
                after(i + 1)
        finished()
        return reducers

    opts = {"checkpoint": tmp_path / ".p.safetensors", "checkpoint_key": "k"}
    opts["checkpoint_every_s"] = 1e-9
    with pytest.raises(KeyboardInterrupt):
        run([Sum(1.0), Sum(2.0)], opts, die_at=3)
    resumed = run([Sum(1.0), Sum(2.0)], opts)
    full = run([Sum(1.0), Sum(2.0)], {})
    for a, b in zip(resumed, full):
        assert torch.equal(a.total, b.total) and a.n == b.n == 7
    assert not (tmp_path / ".p.safetensors").exists()
    # another key (other model, options or tokens): a fresh start, not a wrong resume
    with pytest.raises(KeyboardInterrupt):
        run([Sum(1.0), Sum(2.0)], opts, die_at=3)
    other = run([Sum(1.0), Sum(2.0)], {**opts, "checkpoint_key": "other"})
    assert [r.n for r in other] == [7, 7]


def test_misspelled_analysis_options_are_refused_with_a_suggestion():
    from rope_lens.errors import InputError
    from rope_lens.request import check_options

    check_options("ablation", {"head": 3, "band": "0:8"})
    with pytest.raises(InputError, match="did you mean 'head'"):
        check_options("decompose", {"hed": 3})
    with pytest.raises(InputError, match="did you mean 'band'"):
        check_options("ablation", {"bnd": "0:8"})
    with pytest.raises(InputError, match="does not apply to band-norm"):
        check_options("band-norm", {"head": 3})


def test_report_full_disk_is_one_line_and_keeps_the_old_page(model, tmp_path, capsys, monkeypatch):
    from rope_lens import atomic

    out = tmp_path / "out"
    assert _analyze(capsys, "--model", str(model), "--out", str(out), *SMALL)[0] == 0
    page = tmp_path / "r.html"
    page.write_text("old page")

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(atomic, "write_file", full)
    monkeypatch.setattr(atomic, "write_text", full)
    assert cli.main(["report", str(out), "--out", str(page)]) == 2
    _one_line(capsys.readouterr().err, "No space left on device")
    assert page.read_text() == "old page"


@pytest.mark.parametrize(
    "analysis", ["heads", "profiles", "apostrophe", "massive-values --no-disrupt", "sinks"]
)
def test_head_analyses_resume_after_an_interrupt(model, tmp_path, capsys, monkeypatch, analysis):
    """Heads, profiles, apostrophe, massive values and sinks checkpoint too: Ctrl-C at batch 3,
    rerun, same table as a fresh run."""
    from rope_lens import inputs

    analysis, *flags = analysis.split()
    name = analysis.replace("-", "_")
    out = str(tmp_path / "out")
    args = ["--model", str(model), "--out", out, "--layers", "0,1", "--no-progress", *flags]
    args += ["--analysis", analysis, "--max-tokens", "500", "--batch-size", "2"]
    real = _interrupt_after(monkeypatch, 3)
    code, _, err = _analyze(capsys, *args)
    assert code == 130 and "kept 3 finished batches" in err
    monkeypatch.setattr(inputs, "batches", real)
    assert _analyze(capsys, *args)[0] == 0
    assert not (tmp_path / "out" / f".{name}.partial.safetensors").exists()
    resumed = pd.read_parquet(tmp_path / "out" / f"{name}.parquet")
    fresh_args = [a if a != out else str(tmp_path / "fresh") for a in args]
    assert _analyze(capsys, *fresh_args)[0] == 0
    fresh = pd.read_parquet(tmp_path / "fresh" / f"{name}.parquet")
    pd.testing.assert_frame_equal(resumed, fresh, check_exact=False, rtol=1e-6)


@pytest.mark.parametrize("kind", ["rotation-free", "mean"])
def test_ablation_resumes_from_its_finished_passes(model, tmp_path, capsys, monkeypatch, kind):
    """An ablation sweep (baseline + 2 bands) interrupted in its third pass: the rerun runs only
    that pass (mean ablation: with the baseline's saved means) and equals a fresh run."""
    from rope_lens import inputs

    out = str(tmp_path / "out")
    args = ["--model", str(model), "--out", out, "--no-progress", "--analysis", "ablation"]
    args += ["--sweep", "low", "--sweep-points", "2", "--max-tokens", "200", "--ablation", kind]
    real = inputs.batches
    calls = []

    def counting(*a, **k):
        calls.append(1)
        if die and len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(inputs, "batches", counting)
    die = True
    code, _, err = _analyze(capsys, *args)
    assert code == 130 and "kept 2 finished passes" in err
    calls.clear()
    die = False
    assert _analyze(capsys, *args)[0] == 0
    assert len(calls) == 1  # only the unfinished pass ran again
    assert not (tmp_path / "out" / ".ablation.partial.passes").exists()
    resumed = pd.read_parquet(tmp_path / "out" / "ablation.parquet")
    fresh_args = [a if a != out else str(tmp_path / "fresh") for a in args]
    assert _analyze(capsys, *fresh_args)[0] == 0
    fresh = pd.read_parquet(tmp_path / "fresh" / "ablation.parquet")
    pd.testing.assert_frame_equal(resumed, fresh, check_exact=False, rtol=1e-6)


def test_temporaries_of_a_killed_write_are_cleaned_up(model, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".band_norm.parquet.abc123.tmp"
    stale.write_bytes(b"half a table")  # what SIGKILL during a write leaves
    assert _analyze(capsys, "--model", str(model), "--out", str(out), *SMALL)[0] == 0
    assert not stale.exists() and (out / "band_norm.parquet").exists()
