"""Issue 21, the analysis side: one identity rule for reusing a table, that a same-size rewrite
of the weights or an edited value cannot fool, and degenerate inputs refused in one line.

Each test is a case the issue reproduced on the code before it (each fails there).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from rope_lens import identity, io
from rope_lens.errors import CheckpointError
from tests.helpers import one_error_line, prompts_file, run_cli

TEXTS = [f"Line {i}: it's a short text about positions and rotations." for i in range(6)]
QUIET = ["--no-progress", "--batch-size", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    return prompts_file(tmp_path_factory.mktemp("prompts"), TEXTS)


def _analyze(capsys, *argv):
    return run_cli(capsys, "analyze", *argv)


_one_line = one_error_line


# The sampling fingerprint this replaces: 33 blocks of 64 KiB spread over each file.
OLD_SAMPLES, OLD_BLOCK = 32, 1 << 16


def _sampled(size: int) -> list[tuple[int, int]]:
    starts = [max(0, (size - OLD_BLOCK) * i // OLD_SAMPLES) for i in range(OLD_SAMPLES + 1)]
    return [(s, s + OLD_BLOCK) for s in starts]


def _unsampled_q_proj(path: Path) -> str | None:
    """A q_proj tensor of ``path`` whose bytes lie outside every block the old fingerprint
    read (so a change to it was invisible), or None."""
    n = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + n])
    size = path.stat().st_size
    for name, rec in header.items():
        if not name.endswith("q_proj.weight"):
            continue
        lo, hi = (8 + n + off for off in rec["data_offsets"])
        if all(hi <= a or lo >= b for a, b in _sampled(size)):
            return name
    return None


@pytest.fixture(scope="module")
def wide_model_built(tmp_path_factory):
    """A tiny llama whose weight file is larger than the old fingerprint's samples, with a
    q_proj those samples never read (built once; tests change a copy)."""
    from rope_lens.models.tiny import tiny_model_dir

    folder = tiny_model_dir(
        "llama", tmp_path_factory.mktemp("wide") / "model", intermediate_size=2048,
        num_hidden_layers=3,
    )  # fmt: skip
    assert _unsampled_q_proj(folder / "model.safetensors"), "try another width"
    return folder


@pytest.fixture
def wide_model(wide_model_built, tmp_path):
    return Path(shutil.copytree(wide_model_built, tmp_path / "model"))


def test_fine_tuned_weights_saved_into_the_same_folder_are_recomputed(
    wide_model, prompts, tmp_path, capsys, caplog
):
    """Case 1: one layer's q_proj changed and saved with save_pretrained into the analysed
    folder (same size, same header): the table is recomputed and the warning names the
    weights, not "up to date" with the stale numbers."""
    import torch
    from transformers import AutoModelForCausalLM

    out = str(tmp_path / "out")
    argv = ["--model", str(wide_model), "--out", out, "--prompts", str(prompts), *QUIET]
    assert _analyze(capsys, *argv)[0] == 0
    before = pd.read_parquet(tmp_path / "out" / "band_norm.parquet")
    weights = wide_model / "model.safetensors"
    size = weights.stat().st_size
    name = _unsampled_q_proj(weights)
    assert name is not None
    model = AutoModelForCausalLM.from_pretrained(wide_model)
    with torch.no_grad():
        model.get_parameter(name).mul_(3.0)
    model.save_pretrained(wide_model)
    assert weights.stat().st_size == size
    with caplog.at_level(logging.WARNING):
        code, stdout, _ = _analyze(capsys, *argv)
    assert code == 0 and "up to date" not in stdout
    assert "model weights" in caplog.text
    after = pd.read_parquet(tmp_path / "out" / "band_norm.parquet")
    layer = int(name.split(".")[2])
    q = (after.kind == "q") & (after.layer == layer)
    assert (after.mean_norm[q] / before.mean_norm[q]).round(4).eq(3.0).all()


def test_weight_digests_are_cached_by_stat_and_redone_when_it_changes(tmp_path, monkeypatch):
    """A file is read once; a same-size rewrite (new mtime) is read again; a file written in
    the last seconds is not cached (two writes in one timestamp tick could share a stat)."""
    import os

    calls = []
    real = identity._read_sha256
    monkeypatch.setattr(identity, "_read_sha256", lambda p: calls.append(p) or real(p))
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"a" * 1000)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # long ago: cacheable
    first = identity.sha256_file(path)
    assert identity.sha256_file(path) == first and len(calls) == 1
    path.write_bytes(b"b" * 1000)  # same size, new content, mtime now: racy, never cached
    second = identity.sha256_file(path)
    assert second != first and len(calls) == 2
    identity.sha256_file(path)
    assert len(calls) == 3


def test_value_edited_inside_a_valid_parquet_is_noticed(prompts, tiny_dirs, tmp_path, capsys):
    """Also-list: one mean_norm changed by hand, the file rewritten as a valid parquet with its
    metadata (or by pandas, without it): no reader takes it, and analyze recomputes it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    argv = ["--model", str(tiny_dirs["llama"]), "--out", str(out), "--prompts", str(prompts)]
    assert _analyze(capsys, *argv, *QUIET)[0] == 0
    path = out / "band_norm.parquet"
    table = pq.read_table(path)
    df = table.to_pandas()
    df.loc[3, "mean_norm"] += 1.0
    edited = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(
        table.schema.metadata
    )
    pq.write_table(edited, path)
    with pytest.raises(CheckpointError, match="edited"):
        io.load_table(path)
    code, stdout, _ = _analyze(capsys, *argv, *QUIET)
    assert code == 0 and "up to date" not in stdout
    df.to_parquet(path, index=False)  # pandas drops the embedded metadata: the sidecar speaks
    with pytest.raises(CheckpointError, match="edited"):
        io.load_table(path)


def test_a_recompute_names_the_field_that_differs(prompts, tiny_dirs, tmp_path, capsys, caplog):
    out = str(tmp_path / "out")
    argv = ["--model", str(tiny_dirs["llama"]), "--out", out, "--prompts", str(prompts), *QUIET]
    assert _analyze(capsys, *argv)[0] == 0
    with caplog.at_level(logging.WARNING):
        assert _analyze(capsys, *argv, "--max-len", "16")[0] == 0
    assert "option max_len: table 512, now 16" in caplog.text
    assert "inputs (the token ids analysed)" in caplog.text


def test_the_same_texts_from_parquet_are_up_to_date_with_the_txt_run(
    prompts, tiny_dirs, tmp_path, capsys
):
    """docs/scale.md: a parquet run of the same texts has the txt run's identity."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": TEXTS}), tmp_path / "p.parquet")
    out = str(tmp_path / "out")
    argv = ["--model", str(tiny_dirs["llama"]), "--out", out, *QUIET]
    assert _analyze(capsys, *argv, "--prompts", str(prompts))[0] == 0
    code, stdout, _ = _analyze(capsys, *argv, "--prompts", str(tmp_path / "p.parquet"))
    assert code == 0 and "up to date" in stdout


def test_parquet_rows_without_a_string_text_are_refused(tiny_dirs, tmp_path, capsys):
    """Also-list: jsonl refuses a record without a string text; parquet dropped it silently."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rope_lens import corpus
    from rope_lens.errors import InputError

    pq.write_table(pa.table({"text": [7, 8]}), tmp_path / "p.parquet")
    argv = ["--model", str(tiny_dirs["llama"]), "--out", str(tmp_path / "out")]
    code, _, err = _analyze(capsys, *argv, "--prompts", str(tmp_path / "p.parquet"), *QUIET)
    assert code == 2
    _one_line(err, "row 1 has no string 'text' (it holds int)")
    pq.write_table(pa.table({"text": ["a", "b", "c", None]}), tmp_path / "q.parquet")
    with pytest.raises(InputError, match="row 4 has no string 'text' .it holds NoneType"):
        list(corpus.Texts(tmp_path / "q.parquet"))


@pytest.fixture(scope="module")
def one_token(tmp_path_factory):
    path = tmp_path_factory.mktemp("one") / "one.txt"
    path.write_text("a\n")
    return path


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--analysis", "ablation", "--band", "0:2"], "no next-token target"),
        (["--analysis", "massive-values", "--probe-n", "1", "--probe-len", "16"], "no next-token target"),
        (["--analysis", "sinks"], "at least 2 tokens"),
    ],
)  # fmt: skip
def test_one_token_texts_are_refused_not_saved(
    tiny_dirs, one_token, tmp_path, capsys, argv, message
):
    """Case 7 and the sinks traceback: a single one-token text with --no-bos has no target
    and no key after the first: one line, nothing saved (not "loss 0.0000 over 0 targets")."""
    out = tmp_path / "out"
    code, _, err = _analyze(
        capsys, "--model", str(tiny_dirs["llama"]), "--out", str(out), "--no-bos",
        "--prompts", str(one_token), *argv, *QUIET,
    )  # fmt: skip
    assert code == 2
    _one_line(err, message)
    assert not list(out.glob("*.parquet"))


def test_an_empty_band_is_refused(tiny_dirs, prompts, tmp_path, capsys):
    """Case 7: --band 5:5 ablates nothing and was saved as an ablation with delta 0."""
    code, _, err = _analyze(
        capsys, "--model", str(tiny_dirs["llama"]), "--out", str(tmp_path / "out"),
        "--analysis", "ablation", "--band", "5:5", "--prompts", str(prompts), *QUIET,
    )  # fmt: skip
    assert code == 2
    _one_line(err, "band '5:5' is empty")


def test_a_refused_run_leaves_no_results_folder(tiny_dirs, tmp_path, capsys, monkeypatch):
    """Also-list: a run refused after its output folder was made left results/<name>-<hash>/
    behind (holding only the lock file)."""
    monkeypatch.chdir(tmp_path)
    model = Path(shutil.copytree(tiny_dirs["llama"], tmp_path / "m"))
    (tmp_path / "empty.txt").write_text("\n\n")
    code, _, err = _analyze(capsys, "--model", str(model), "--prompts", "empty.txt", *QUIET)
    assert code == 2 and err.startswith("error: ")
    assert not (tmp_path / "results").exists()
    # a folder that held results before keeps them
    ok = tmp_path / "ok.txt"
    ok.write_text("\n".join(TEXTS) + "\n")
    assert _analyze(capsys, "--model", str(model), "--prompts", str(ok), *QUIET)[0] == 0
    assert _analyze(capsys, "--model", str(model), "--prompts", "empty.txt", *QUIET)[0] == 2
    assert len(list((tmp_path / "results").glob("*/band_norm.parquet"))) == 1


@pytest.fixture
def custom_code_model(tiny_dirs, tmp_path):
    """A model folder whose tokenizer is a class from the folder's own code (never run)."""
    folder = Path(shutil.copytree(tiny_dirs["llama"], tmp_path / "custom"))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["tokenization_x.XTokenizer", None]}
    config["tokenizer_class"] = "XTokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "tokenization_x.py").write_text("raise SystemExit('custom code ran')\n")
    return folder


@pytest.mark.parametrize(
    "model, extra, message",
    [
        ("custom", [], "needs code from its repository"),
        ("foo/bar/baz", [], "is neither a model folder here nor a valid hub id"),
        ("bad id/x", [], "is neither a model folder here nor a valid hub id"),
        ("llama", ["--device", "tpu"], "unknown --device 'tpu'; choose auto, cpu, cuda"),
    ],
)
def test_load_errors_name_the_real_cause(
    custom_code_model, tiny_dirs, prompts, tmp_path, capsys, model, extra, message
):
    """Item 5: "its files look corrupt" was said for a tokenizer needing custom code, a
    malformed hub id and --device tpu; it is said only for a corrupt file."""
    name = {"custom": str(custom_code_model), "llama": str(tiny_dirs["llama"])}.get(model, model)
    out = tmp_path / "out"
    code, _, err = _analyze(
        capsys, "--model", name, "--out", str(out), "--prompts", str(prompts), *extra, *QUIET
    )
    assert code == 2
    _one_line(err, message)
    assert "corrupt" not in err and not out.exists()


def test_a_resume_checkpoint_of_the_weights_before_an_in_place_save_is_not_used(
    wide_model, prompts, tmp_path, capsys, monkeypatch
):
    """Case 1, the resume side: partial sums of the old weights were resumed after the same
    same-size save_pretrained (the checkpoint's key had the sampled fingerprint's blind spot).
    Now the checkpoint is ignored and the table equals a fresh run on the new weights."""
    import torch
    from transformers import AutoModelForCausalLM

    from rope_lens import inputs

    real = inputs.batches

    def dying(*a, **k):
        for i, b in enumerate(real(*a, **k)):
            if i == 2:
                raise KeyboardInterrupt
            yield b

    out = tmp_path / "out"
    argv = ["--model", str(wide_model), "--prompts", str(prompts), *QUIET]
    monkeypatch.setattr(inputs, "batches", dying)
    code, _, _ = _analyze(capsys, *argv, "--out", str(out), "--checkpoint-every", "1e-9")
    assert code == 130 and (out / ".band_norm.partial.safetensors").exists()
    monkeypatch.setattr(inputs, "batches", real)
    name = _unsampled_q_proj(wide_model / "model.safetensors")
    assert name is not None
    model = AutoModelForCausalLM.from_pretrained(wide_model)
    with torch.no_grad():
        model.get_parameter(name).mul_(3.0)
    model.save_pretrained(wide_model)
    assert _analyze(capsys, *argv, "--out", str(out))[0] == 0
    assert _analyze(capsys, *argv, "--out", str(tmp_path / "fresh"))[0] == 0
    resumed = pd.read_parquet(out / "band_norm.parquet")
    fresh = pd.read_parquet(tmp_path / "fresh" / "band_norm.parquet")
    pd.testing.assert_frame_equal(resumed, fresh)
