"""Issue 21 (readers) and issue 20 item 1: `report`, `figures` and `compare` draw a table only
when it is whole, unedited and of the model (and head, and options) the page claims, say why
they leave one out, and never write two runs' outputs into one place.

Each test is a case the issues reproduced on the code before it (each fails there).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from rope_lens import io
from tests.helpers import prompts_file, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

LINES = [f"Line {i}: it's a short text, isn't it? We'll see {i}." for i in range(6)]
ARGS = ["--batch-size", "2", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    return prompts_file(tmp_path_factory.mktemp("prompts"), LINES)


@pytest.fixture
def models(tiny_dirs, tmp_path):
    """Two different tiny llamas (other seeds), under runs/a/seed0 and runs/b/seed0."""
    from rope_lens.models.tiny import tiny_model_dir

    a = tiny_model_dir("llama", tmp_path / "runs" / "a" / "seed0", seed=0)
    b = tiny_model_dir("llama", tmp_path / "runs" / "b" / "seed0", seed=1)
    return a, b


_run = run_cli


def _analyze(capsys, model, out, prompts, *extra):
    argv = ["analyze", "--model", str(model), "--out", str(out), "--prompts", str(prompts)]
    code, stdout, err = _run(capsys, *argv, *ARGS, *extra)
    assert code == 0, err
    return stdout


def _report(capsys, model, results, prompts, analyses, *extra):
    argv = ["report", "--model", str(model), "--results", str(results), "--analyses", analyses]
    argv += [f"--analyze-arg=--prompts={prompts}", "--analyze-arg=--batch-size=2", "--quiet"]
    return _run(capsys, *argv, "--threads", "1", "--out", str(results / "r.html"), *extra)


def _folder_of(meta: dict) -> str:
    return meta["folder"]


def test_report_never_draws_another_models_table_under_this_models_name(
    models, prompts, tmp_path, capsys
):
    """Case 2: DIR holds model A's band-norm (and profiles) tables; `report --model B --results
    DIR --analyses band-norm,heads` kept A's band norms under B's title. Now band-norm is
    recomputed for B, and A's profiles table is left out, saying why."""
    a, b = models
    results = tmp_path / "results"
    _analyze(capsys, a, results, prompts)
    _analyze(capsys, a, results, prompts, "--analysis", "profiles")
    code, _, err = _report(capsys, b, results, prompts, "band-norm,heads")
    assert code == 0, err
    _, meta = io.load_table(results / "band_norm.parquet")
    assert _folder_of(meta) == str(b.resolve())
    page = (results / "r.html").read_text()
    assert "left out" in page and "profiles.parquet" in page and "another model" in page
    assert "Frequency profiles by head class" not in page  # A's profiles are not drawn


def test_report_reruns_heads_saved_without_the_spread(models, prompts, tmp_path, capsys):
    """Fig 18 picks its head by entropy: a heads table from a default run is recomputed."""
    a, _ = models
    results = tmp_path / "results"
    _analyze(capsys, a, results, prompts, "--analysis", "heads")
    assert "entropy" not in pd.read_parquet(results / "heads.parquet")
    assert _report(capsys, a, results, prompts, "heads")[0] == 0
    assert "entropy" in pd.read_parquet(results / "heads.parquet")


def _role_heads(results: Path) -> dict[str, tuple[int, int]]:
    """The role heads, from the corpus scores (an independent pick, written for the test)."""
    heads = pd.read_parquet(results / "heads.parquet")
    apos = pd.read_parquet(results / "apostrophe.parquet")
    mid = heads.layer.max() / 2

    def best(df, score):
        r = df.sort_values(score, ascending=False).iloc[0]
        return int(r["layer"]), int(r["head"])

    return {
        "previous-token head": best(heads, "prev_score"),
        "apostrophe head": best(apos, "apostrophe_score"),
        "diagonal head, late layer": best(heads[heads.layer > mid], "diag_score"),
    }


def _mislabelled_folder(capsys, model, results, prompts) -> tuple[int, int]:
    """Corpus scores, then one-prompt tables of a single head that plays none of the roles
    (as after the README's own per-token / decompose runs): returns that head."""
    _analyze(capsys, model, results, prompts, "--analysis", "heads", "--spread")
    _analyze(capsys, model, results, prompts, "--analysis", "apostrophe")
    roles = set(_role_heads(results).values())
    other = next((L, h) for L in (0, 1) for h in range(4) if (L, h) not in roles)
    for analysis in ("per-token", "decompose"):
        argv = ["--analysis", analysis, "--layers", str(other[0]), "--head", str(other[1])]
        _analyze(capsys, model, results, prompts, *argv)
    return other


def test_figures_never_title_a_head_with_a_role_it_does_not_play(models, prompts, tmp_path, capsys):
    """Issue 20 item 1: per-token / decompose tables of one head were drawn as the
    "previous-token head", the "apostrophe head" and the Fig 12 / App. E.1 head. Now those
    panels are skipped, each saying which head the table holds and what to run."""
    a, _ = models
    results = tmp_path / "results"
    layer, head = _mislabelled_folder(capsys, a, results, prompts)
    out = tmp_path / "figs"
    argv = ["figures", "--results", str(results), "--out", str(out), "--formats", "html"]
    code, stdout, _ = _run(capsys, *argv, "--theory", "skip")
    assert code == 0
    for key in ("fig16a_q_tokens_prev", "fig17a_q_tokens_apostrophe", "fig12_logits_apostrophe"):
        assert not list(out.glob(f"*/{key}.html")), key
        line = next(x for x in stdout.splitlines() if key in x)
        assert f"holds L{layer}H{head}, not the" in line and "--layers" in line
    titled = 0
    for role, (L, h) in _role_heads(results).items():
        for page in out.glob("*/*.html"):
            text = _unescaped(page.read_text())
            if f"{role}<br>" in text:  # a panel titled with a role shows that role's head
                assert f"{role}<br><sup>L{L}H{h}," in text, (page.name, role)
                titled += 1
    assert titled == 0  # every role panel needs a one-prompt table this folder lacks


def _unescaped(html: str) -> str:
    """Figure titles as written: pages escape < and > inside their JSON."""
    return html.replace("\\u003c", "<").replace("\\u003e", ">")


def test_report_recomputes_one_prompt_tables_for_the_role_heads(models, prompts, tmp_path, capsys):
    """Issue 20 item 1, acceptance: the mislabel scenario, then `report --model`: the one-prompt
    tables are recomputed for the picked heads, and every role panel shows its own head."""
    a, _ = models
    results = tmp_path / "results"
    _mislabelled_folder(capsys, a, results, prompts)
    names = "heads,apostrophe,per-token,decompose"
    code, _, err = _report(capsys, a, results, prompts, names)
    assert code == 0, err
    page = _unescaped((results / "r.html").read_text())
    held = pd.read_parquet(results / "per_token.parquet")[["layer", "head"]].drop_duplicates()
    for role, (L, h) in _role_heads(results).items():
        assert ((held["layer"] == L) & (held["head"] == h)).any(), role
        assert f"{role}<br><sup>L{L}H{h}," in page, role


def test_figures_of_two_runs_with_one_folder_name_never_collide(
    models, prompts, tmp_path, capsys, monkeypatch
):
    """Case 10: results of runs/a/seed0 and runs/b/seed0 were both written to OUT/seed0/; the
    second overwrote the first and INDEX.md pointed both at the one file left."""
    monkeypatch.chdir(tmp_path)
    for model in models:
        _analyze(capsys, model, Path("results") / model.parent.name, prompts)
    out = tmp_path / "figs"
    argv = ["figures", "--results", "results", "--out", str(out), "--formats", "html"]
    assert _run(capsys, *argv, "--theory", "skip", "--only", "fig03a_query_per_layer")[0] == 0
    pages = sorted(out.glob("*/fig03a_query_per_layer.html"))
    assert len(pages) == 2
    index = (out / "INDEX.md").read_text()
    for page in pages:
        assert f"`{page.parent.name}/fig03a_query_per_layer`" in index
    assert len({p.parent.name for p in pages}) == 2


def test_one_unreadable_table_stops_no_other_figure(models, prompts, tmp_path, capsys):
    """Also-list: one truncated table stopped `figures` for every folder."""
    a, b = models
    _analyze(capsys, a, tmp_path / "results" / "a", prompts)
    _analyze(capsys, b, tmp_path / "results" / "b", prompts)
    _analyze(capsys, b, tmp_path / "results" / "b", prompts, "--analysis", "heads")
    bad = tmp_path / "results" / "b" / "band_norm.parquet"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    out = tmp_path / "figs"
    argv = ["figures", "--results", str(tmp_path / "results"), "--out", str(out)]
    code, stdout, _ = _run(capsys, *argv, "--formats", "html", "--theory", "skip")
    assert code == 0
    assert len(list(out.glob("*/fig03a_query_per_layer.html"))) == 1  # a's
    assert len(list(out.glob("*/extra_head_classes.html"))) == 1  # b's heads
    assert "band_norm.parquet" in stdout and "not a readable parquet" in stdout


def test_a_malformed_training_csv_is_skipped_saying_why(tmp_path, capsys):
    """Traceback list: `figures --runs` with a malformed eval.csv (ParserError)."""
    run = tmp_path / "grid" / "wiki" / "rope" / "seed0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("step,loss\n1,5.0\n2,4.5\n")
    (run / "eval.csv").write_text("step,split,ppl\n1,valid,7.0\n2,valid,6.5,extra,fields\n")
    out = tmp_path / "figs"
    argv = ["figures", "--results", str(tmp_path / "none"), "--runs", str(tmp_path / "grid")]
    code, stdout, err = _run(
        capsys, *argv, "--out", str(out), "--formats", "html", "--theory", "skip"
    )
    assert code == 0, err
    assert list(out.glob("training-grid*/training_loss.html"))
    assert "eval.csv is not a readable CSV" in stdout


def _compare_args(tmp_path, models, questions="frequency_use"):
    return ["compare", "--models", ",".join(map(str, models)), "--results", str(tmp_path / "results"),
            "--out", str(tmp_path / "atlas"), "--questions", questions]  # fmt: skip


def _into_default_folder(capsys, model, results, prompts, source=None):
    from rope_lens.request import default_results_dir

    out = default_results_dir(str(model), results)
    _analyze(capsys, source or model, out, prompts)
    return out


def test_compare_never_relabels_another_models_rows(models, prompts, tmp_path, capsys):
    """Case 3: B's folder holds a table whose sidecar says A: its rows were labelled B."""
    a, b = models
    results = tmp_path / "results"
    _into_default_folder(capsys, a, results, prompts)
    _into_default_folder(capsys, b, results, prompts, source=a)  # A's table in B's folder
    code, stdout, _ = _run(capsys, *_compare_args(tmp_path, [a, b]))
    assert code == 0
    table = pd.read_csv(tmp_path / "atlas" / "frequency_use.csv")
    assert set(table.model) == {str(a)}
    assert f"left out {b}'s band-norm table" in stdout and "another model" in stdout


def test_compare_is_one_line_on_a_truncated_table_and_writes_offline_pages(
    models, prompts, tmp_path, capsys
):
    """Traceback list: `compare` with a truncated table (ArrowInvalid). Also-list: it loaded
    plotly from a CDN and wrote non-atomically."""
    a, b = models
    results = tmp_path / "results"
    _into_default_folder(capsys, a, results, prompts)
    bad = _into_default_folder(capsys, b, results, prompts) / "band_norm.parquet"
    bad.write_bytes(bad.read_bytes()[:100])
    code, stdout, err = _run(capsys, *_compare_args(tmp_path, [a, b]))
    assert code == 0 and "Traceback" not in err
    assert f"left out {b}'s band-norm table" in stdout and "not a readable parquet" in stdout
    page = (tmp_path / "atlas" / "frequency_use.html").read_text()
    assert "cdn.plot.ly" not in page and 'src="plotly.min.js"' in page
    assert (tmp_path / "atlas" / "plotly.min.js").stat().st_size > 1_000_000
    assert not list((tmp_path / "atlas").glob(".*tmp*"))


def test_report_of_a_folder_of_two_models_leaves_the_odd_one_out(
    models, prompts, tmp_path, capsys, caplog
):
    a, b = models
    results = tmp_path / "results"
    _analyze(capsys, a, results, prompts)
    _analyze(capsys, a, results, prompts, "--analysis", "heads")
    _analyze(capsys, b, results, prompts, "--analysis", "profiles")
    with caplog.at_level(logging.WARNING):
        code, _, err = _run(capsys, "report", str(results), "--out", str(tmp_path / "r.html"))
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert "Frequency profiles by head class" not in page and "profiles.parquet" in page
    assert "it is a table of another model: model folder" in caplog.text


def test_first_layer_figures_need_the_models_first_layer(models, prompts, tmp_path, capsys):
    """Issue 20 item 1, layers: Fig 4 (the first layer's heads) was drawn from whichever layer
    a band-norm table began with (here layer 1 of 0-1); Fig 11 (the last layer) is right."""
    a, _ = models
    results = tmp_path / "results"
    _analyze(capsys, a, results, prompts, "--layers", "1")
    out = tmp_path / "figs"
    argv = ["figures", "--results", str(results), "--out", str(out), "--formats", "html"]
    code, stdout, _ = _run(capsys, *argv, "--theory", "skip")
    assert code == 0
    assert not list(out.glob("*/fig04a_query_per_head_first_layer.html"))
    assert "not the model's first layer 0" in stdout
    assert list(out.glob("*/fig11_query_per_head_last_layer.html"))
