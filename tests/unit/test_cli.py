"""The command line: end-to-end on a tiny model folder, and one clear line for bad input."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from rope_lens import cli
from rope_lens.io import load_table


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_analyze_tiny_model_end_to_end(tiny_dirs, tmp_path, capsys):
    """analyze writes a parquet table + sidecar, prints a summary, and skips reruns."""
    args = [
        "analyze",
        "--model",
        str(tiny_dirs["gemma3"]),
        "--out",
        str(tmp_path),
        "--layers",
        "0,-1",
        "--no-progress",
    ]
    code, out, _ = _run(capsys, *args)
    assert code == 0 and "largest-norm chunks by band" in out
    df, meta = load_table(tmp_path / "band_norm.parquet")
    assert sorted(df.layer.unique()) == [0, 2]
    assert meta["rope"]["qk_norm_before_rotation"] is True and len(meta["inputs_sha256"]) == 64
    assert meta["bos_prepended"] and not meta["bos_counted"]
    code, out, _ = _run(capsys, *args)
    assert code == 0 and "up to date" in out
    code, out, _ = _run(capsys, *args, "--force", "--max-tokens", "50")
    assert code == 0 and set(pd.read_parquet(tmp_path / "band_norm.parquet").n_tokens) == {50}


@pytest.mark.parametrize(
    "argv,message",
    [
        (["analyze", "--model", "gemma-7"], "did you mean gemma-7b"),
        (["analyze", "--model", "smollm-135m"], "did you mean smollm2-135m"),
        (["analyze", "--model", "nobody/not-a-model-xyz"], "not in the local Hugging Face cache"),
        (["analyze", "--model", "/no/such/folder"], "not a model folder"),
        (["analyze", "--prompts", "EMPTY"], "no non-empty texts"),
        (["analyze", "--layers", "0,99"], "layer 99 is out of range"),
        (["analyze", "--layers", "x"], "cannot read layers"),
        (["analyze", "--dtype", "float8"], "unknown --dtype"),
        (["analyze", "--device", "cuda:3"], None),
    ],
)
def test_bad_input_is_one_line(tiny_dirs, tmp_path, capsys, monkeypatch, argv, message):
    """Each bad input exits 2 with a single 'error: ...' line, never a traceback."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    argv = [str(empty) if a == "EMPTY" else a for a in argv]
    if "--model" not in argv:
        argv += ["--model", str(tiny_dirs["llama"])]
    if argv[argv.index("--model") + 1] == str(tiny_dirs["llama"]) and "cuda" in " ".join(argv):
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
        message = "no CUDA GPU"
    code, out, err = _run(capsys, *argv, "--out", str(tmp_path / "o"), "--no-progress")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["analyze", "--analysis", "head"], "invalid choice 'head'; did you mean 'heads'?"),
        (["analyze", "--analysis", "ablation", "--sweep", "lo"], "did you mean 'low'?"),
        (["analyz"], "did you mean 'analyze'?"),
    ],
)
def test_a_wrong_choice_is_one_line_with_the_nearest(capsys, argv, message):
    """Not 60 lines of usage: one ``error:`` line naming the nearest choice, exit status 2."""
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1
    assert err[0].startswith("error: ") and message in err[0]


def test_real_process_has_no_traceback(tmp_path):
    """Through the installed entry point too: exit status 2 and no traceback."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "rope_lens.cli", "analyze", "--model", "llama3-8b"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "did you mean" in proc.stderr


def test_models_listing(capsys):
    code, out, _ = _run(capsys, "models", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and {"smollm2-135m", "gemma3-270m", "gemma-7b", "llama-3.1-8b"} <= set(rows)
    assert rows["gemma-7b"]["repo_id"] == "google/gemma-7b"


def test_output_folder_names_never_escape():
    """Model names become one folder name: a trained run's path or '..' cannot escape --out."""
    from rope_lens.pipeline import slug

    assert slug("/abs/runs/cpu-wiki-rope-s0/") == "cpu-wiki-rope-s0"
    assert slug("HuggingFaceTB/SmolLM2-135M") == "SmolLM2-135M"
    for bad in ("..", "../..", "a/..", ".", ""):
        assert slug(bad) == "model"


def test_corrupt_results_are_one_clear_error(tmp_path):
    """The metadata lives inside the parquet: a garbage .json copy is ignored; a legacy
    parquet (no metadata inside) with a garbage sidecar, or a torn parquet, is one clear error."""
    import pandas as pd

    from rope_lens.errors import CheckpointError
    from rope_lens.io import save_table

    path = save_table(pd.DataFrame({"a": [1]}), tmp_path / "t.parquet", {"model": "m"})
    assert load_table(path)[1]["model"] == "m"
    path.with_suffix(".json").write_text('{"model": ')
    assert load_table(path)[1]["model"] == "m"
    pd.DataFrame({"a": [1]}).to_parquet(path, index=False)  # legacy: metadata only beside it
    with pytest.raises(CheckpointError, match="not readable JSON"):
        load_table(path)
    path.write_bytes(b"PAR1 torn")
    with pytest.raises(CheckpointError, match="not a readable parquet"):
        load_table(path)
