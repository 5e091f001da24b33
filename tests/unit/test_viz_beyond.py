"""Figures of the beyond-the-paper analyses draw exactly the numbers of their tables."""

import numpy as np
import pandas as pd
import pytest

from rope_lens.analyses import critical, massive_values, sinks
from rope_lens.viz import beyond
from tests.helpers import one_batch

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["Figures must show the table's numbers, nothing else.", "A second line of text."]


def _make(lm):
    batch = one_batch(lm, TEXTS)
    return lambda: iter([batch])


def test_critical_figure(tiny_lm):
    df = critical.run(tiny_lm("gemma3"))
    fig = beyond.critical_figure(df)
    assert len(fig.data) == df.layer_type.nunique()
    for trace in fig.data:
        layer_type = trace.name.split(" ")[0]
        sub = df[df.layer_type == layer_type]
        assert np.allclose(np.asarray(trace.y, float), sub.turns_over_context.to_numpy())


def test_massive_and_disruption_figures(tiny_lm):
    lm = tiny_lm("qwen2")
    df = massive_values.run(lm, _make(lm), [0, 1], probe_n=1, probe_len=64, progress=False)
    fig = beyond.massive_figure(df)
    dims = massive_values.dims_table(df)
    ratio_q = dims[dims.kind == "q"].groupby("chunk").ratio_to_mean.max()
    trace = next(t for t in fig.data if t.name == "q: max ratio")
    assert np.allclose(np.asarray(trace.y, float), ratio_q.to_numpy())
    dis = beyond.disruption_figure(df)
    assert list(dis.data[0].x) == ["baseline", "massive", "control"]


def test_sinks_figure(tiny_lm):
    lm = tiny_lm("llama")
    df = sinks.run(lm, _make(lm), [0, 1], n_prompts=1, progress=False)
    fig = beyond.sinks_figure(df)
    heat = fig.data[0]
    heads = sinks.head_table(df)
    want = heads.pivot_table(index="layer", columns="head", values="sink_mass").to_numpy()
    assert np.allclose(np.asarray(heat.z, float), want)


def test_passkey_and_atlas_figures():
    df = pd.DataFrame(
        {
            "model": "m",
            "probe": ["passkey"] * 4 + ["loss"] * 2,
            "variant": ["as-trained", "as-trained", "p-rope", "p-rope", "as-trained", "as-trained"],
            "length": [64, 128, 64, 128, 128, 128],
            "accuracy": [1.0, 0.5, 1.0, 0.75, np.nan, np.nan],
            "position_lo": [np.nan] * 4 + [0, 64],
            "position_hi": [np.nan] * 4 + [64, 128],
            "loss": [np.nan] * 4 + [3.0, 2.5],
            "context": 100,
        }
    )
    fig = beyond.passkey_figure(df)
    assert list(fig.data[1].y) == [1.0, 0.75]  # p-rope accuracies
    assert list(fig.data[2].y) == [3.0, 2.5]
    table = pd.DataFrame({"model": ["a", "a", "b"], "position": [0.5, 0.0, 0.2], "v": [2, 1, 3]})
    atlas = beyond.atlas_figure(table, "v", "t")
    assert list(atlas.data[0].y) == [1, 2] and atlas.data[1].name == "b"


def test_report_sections_from_a_folder(tiny_lm, tmp_path):
    from rope_lens import io

    lm = tiny_lm("gemma3")
    io.save_table(critical.run(lm), tmp_path / "critical.parquet", {"model": lm.name})
    secs = beyond.sections_for_folder(tmp_path)
    assert [s.title for s in secs] == ["Critical frequencies"]
    assert secs[0].preformatted == critical.summarize(critical.run(lm))
    assert len(secs[0].figures) == 1


def test_the_report_includes_the_beyond_sections(tiny_lm, tmp_path):
    """`rope-lens report` reads a folder through sections_from_folder: a saved critical table
    becomes its section there too (not only through beyond.sections_for_folder)."""
    from rope_lens import io
    from rope_lens.viz.sections import sections_from_folder

    lm = tiny_lm("gemma3")
    io.save_table(
        critical.run(lm), tmp_path / "critical.parquet", {"model": lm.name, "analysis": "critical"}
    )
    secs, _ = sections_from_folder(tmp_path)
    assert "Critical frequencies" in [s.title for s in secs]


def test_identical_passkey_curves_are_one_trace_and_say_so():
    """Below the trained context every scaling rule is the model as trained: six identical
    lines on top of each other looked like one; they are one trace named for all, with k/n."""
    variants = ["as-trained", "p-rope", "linear", "dynamic", "yarn", "llama3"]
    rows = []
    for v in variants:
        for length in (256, 512):
            acc = 0.8 if (v == "p-rope" and length == 512) else 1.0
            rows.append(
                dict(model="m", probe="passkey", variant=v, length=length, accuracy=acc,
                     n_prompts=5, context=8192)
            )  # fmt: skip
    fig = beyond.passkey_figure(pd.DataFrame(rows))
    names = [t.name for t in fig.data]
    assert names == ["as-trained = linear = dynamic = yarn = llama3", "p-rope"]
    assert list(fig.data[1].customdata) == ["5/5 prompts", "4/5 prompts"]
