"""`rope-lens compare`: the atlas tables against the per-model tables they summarise."""

import argparse

import pandas as pd
import pytest

from rope_lens.analyses import critical, sinks
from rope_lens.commands import compare
from rope_lens.errors import InputError
from rope_lens.request import default_results_dir
from tests.helpers import one_batch

pytestmark = pytest.mark.usefixtures("one_thread")


def _args(tmp_path, models, **kw):
    base = dict(
        models=",".join(models),
        results=str(tmp_path / "results"),
        out=str(tmp_path / "atlas"),
        questions="critical,sink_heads",
        run=False,
        prompts="shakespeare",
        max_tokens=64,
    )
    return argparse.Namespace(**{**base, **kw})


def _saved(lm, name: str, analysis: str, results) -> None:
    """``analysis`` of ``lm`` saved the way ``rope-lens analyze`` saves it (a sidecar with its
    identity: compare uses no table without one)."""
    from rope_lens.pipeline import run_request
    from rope_lens.request import AnalysisRequest

    out = default_results_dir(name, results)
    prompts = results.parent / "atlas.txt"
    prompts.write_text(TEXT + "\n")
    req = AnalysisRequest(model=name, analysis=analysis, out=str(out), progress=False)
    layers = "0,1" if analysis == "sinks" else None
    assert run_request(req.replace(prompts=str(prompts), layers=layers, threads=1), lm) == 0


TEXT = "An atlas of models, side by side."


def test_atlas_from_saved_tables(tiny_lm, tiny_dirs, tmp_path, capsys):
    models = [str(tiny_dirs["llama"]), str(tiny_dirs["gemma3"])]
    for arch, name in zip(("llama", "gemma3"), models):
        lm = tiny_lm(arch)
        for analysis in ("critical", "sinks"):
            _saved(lm, name, analysis, tmp_path / "results")
        folder = default_results_dir(name, tmp_path / "results")
        batch = one_batch(lm, [TEXT])
        want = sinks.run(lm, lambda b=batch: iter([b]), [0, 1], n_prompts=1, progress=False)
        got = pd.read_parquet(folder / "sinks.parquet")
        pd.testing.assert_frame_equal(got, want)  # the saved table is the analysis' own
    assert compare.run(_args(tmp_path, models)) == 0
    crit = pd.read_csv(tmp_path / "atlas" / "critical.csv")
    # gemma3 has two layer types, llama one: three rows, each the per-model table's share.
    assert len(crit) == 3
    for r in crit.itertuples():
        lm = tiny_lm("llama" if r.model == models[0] else "gemma3")
        table = critical.run(lm)
        sub = table[table.layer_type == r.layer_type]
        assert r.critical_share == pytest.approx(sub.critical.mean())
        assert r.first_critical_chunk == sub[sub.critical].chunk.min()
    assert (tmp_path / "atlas" / "critical.html").exists()
    sink = pd.read_csv(tmp_path / "atlas" / "sink_heads.csv")
    assert set(sink.model) <= set(models)
    out = capsys.readouterr().out
    assert "critical: 3 rows over 2 model(s)" in out


def test_missing_tables_are_named_and_run_makes_them(tiny_dirs, tmp_path, capsys):
    model = str(tiny_dirs["llama"])
    with pytest.raises(InputError, match="no table to compare"):
        compare.run(_args(tmp_path, [model], questions="critical"))
    assert "no critical table" in capsys.readouterr().out
    assert not (tmp_path / "atlas").exists()  # no folder without tables
    assert compare.run(_args(tmp_path, [model], questions="critical", run=True)) == 0
    assert "critical: 32 rows" not in capsys.readouterr().out  # one row per layer type
    assert pd.read_csv(tmp_path / "atlas" / "critical.csv").shape[0] == 1


def test_bad_question(tmp_path):
    with pytest.raises(InputError, match="unknown question"):
        compare.run(_args(tmp_path, ["smollm2-135m"], questions="vibes"))
