"""Head, per-token, decomposition, ablation and training figures; paper recipes; escaping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rope_lens.viz import ablation, heads, paper, tokens, training
from tests.viz_frames import (
    ablation_frame,
    band_norm_frame,
    decompose_frame,
    heads_frame,
    per_token_frame,
)

TOKENS = ["<bos>", "I", "'", "m", "<script>alert(1)</script>", "&x"]


def test_head_class_map_grid_and_hover():
    df = heads_frame()
    fig = heads.head_class_map(df)
    hm = fig.data[0]
    assert np.asarray(hm.z).shape == (4, 4)
    assert fig.layout.yaxis.autorange == "reversed"  # layer 0 on top
    text = hm.customdata[0][1]
    assert "layer 0 · head 1" in text and "class diagonal" in text and "diag 0.90" in text
    assert list(hm.colorbar.ticktext) == ["diagonal", "previous-token", "sink", "other"]


def test_head_score_scatter_one_trace_per_class():
    fig = heads.head_score_scatter(heads_frame())
    assert [t.name for t in fig.data] == ["diagonal", "previous-token", "sink", "other"]


def test_profile_by_class_uses_both_kinds():
    bands = band_norm_frame(n_layers=4, n_heads=4)
    bands = bands[bands.kind != "v"].merge(
        heads_frame()[["layer", "head", "head_class"]], on=["layer", "head"]
    )
    fig = heads.profile_by_class(bands)
    assert {t.xaxis for t in fig.data} == {"x", "x2"}
    assert any("diagonal" in t.name for t in fig.data)


def test_token_labels_are_escaped_and_numbered():
    assert tokens.token_label("<b>x</b>", 3) == "3: &lt;b&gt;x&lt;/b&gt;"
    assert tokens.token_label("a\nb") == "a↵b"
    assert tokens.token_label("I'm") == "I'm"  # quotes need no escaping in labels


def test_token_norm_heatmap_orientation_and_escaping():
    df = per_token_frame(TOKENS)
    fig = tokens.token_norm_heatmap(df, layer=0, head=1, kind="k")
    hm = [t for t in fig.data if t.type == "heatmap"][0]
    assert fig.layout.yaxis.range[0] > fig.layout.yaxis.range[1]  # highest frequency on top
    assert np.asarray(hm.z)[0].mean() > np.asarray(hm.z)[1:].mean()
    ticks = list(fig.layout.xaxis.ticktext)
    assert ticks[4] == "4: &lt;script&gt;alert(1)&lt;/script&gt;" and ticks[5] == "5: &amp;x"
    assert "<script>" not in fig.to_json()
    assert "KV head 0 (read by query head 1)" in hm.customdata[0][0][2]


def test_cs_table_marks_previous_token_at_bos_as_na():
    fig = tokens.cs_table_figure(per_token_frame(TOKENS), layer=0, head=0, n_tokens=4)
    cells = fig.data[0].cells.values
    assert len(cells) == 5  # label column + 4 tokens
    assert cells[1][2] == "N/A" and cells[2][2] == "1.00"


def test_pair_heatmap_logits_and_attention():
    df = decompose_frame(TOKENS)
    fig = tokens.pair_heatmap(df, 0, 0)
    z = np.asarray(fig.data[0].z, dtype=float)
    assert z.shape == (6, 6) and np.isnan(z[0, 1])  # future keys stay blank
    assert fig.layout.yaxis.autorange == "reversed"
    fig = tokens.pair_heatmap(df, 0, 0, value="attention")
    assert fig.data[0].zmax == 1 and "&lt;script&gt;" in fig.data[0].x[4]


def test_contribution_bars_one_trace_per_key():
    fig = tokens.contribution_bars(decompose_frame(TOKENS), 0, 0, query_pos=5, key_pos=[0, 4, 5])
    assert len(fig.data) == 3 and "key 0: &lt;bos&gt;" in fig.data[0].name


def test_ablation_curves_and_survival():
    df = ablation_frame()
    fig = ablation.ablation_curves(df)
    names = [t.name for t in fig.data]
    assert names == ["rotation-free, lowest frequencies", "rotation-free, highest frequencies"]
    assert list(fig.data[1].y) == pytest.approx([0.4, 0.8])
    fig = ablation.head_survival(df)
    assert fig.data[0].y[0] == pytest.approx(0.9)  # starts at the baseline score


def test_training_figures():
    table = pd.DataFrame(
        {
            "dataset": ["wiki", "wiki"],
            "encoding": ["rope", "nope"],
            "ppl_valid@1x_mean": [180.0, 200.0],
            "ppl_valid@2x_mean": [185.0, 205.0],
            "ppl_valid@1x_std": [1.0, np.nan],
            "n": [2, 1],
            "paper": [4.46, 4.86],
        }
    )
    fig = training.ptable_figure(table)
    assert list(fig.data[0].y) == ["NoPE", "RoPE θ = 10k"]  # the paper's row order
    assert training.length_generalisation(table).data[0].x == (1, 2)
    metrics = pd.DataFrame(
        {"step": [10, 20, 10, 20], "loss": [5, 4, 6, 5], "dataset": "wiki",
         "encoding": ["rope", "rope", "nope", "nope"], "seed": "0"}
    )  # fmt: skip
    assert len(training.loss_curves(metrics).data) == 2


def test_table_name_of_recognises_every_table():
    assert paper.table_name_of(band_norm_frame()) == "band_norm"
    assert paper.table_name_of(heads_frame()) == "heads"
    assert paper.table_name_of(per_token_frame(TOKENS[:2])) == "per_token"
    assert paper.table_name_of(decompose_frame(TOKENS[:2])) == "decompose"
    assert paper.table_name_of(ablation_frame()) == "ablation"
    assert paper.table_name_of(pd.DataFrame({"x": [1]})) is None


def test_pick_head_uses_scores_not_indices():
    t = {"heads": heads_frame(), "per_token": per_token_frame(TOKENS[:2])}
    assert paper.pick_head(t, "diag-first", "per_token") == (0, 1)
    assert paper.pick_head(t, "diag-last", "per_token") == (3, 2)
    assert paper.pick_head(t, "prev", "per_token") == (0, 3)
    # A table without the role's head gives no panel (issue 20: a per-token table of layer 2
    # drew its best head, class other, titled "previous-token head"), and says what to run.
    t["per_token"] = per_token_frame(TOKENS[:2], layers=(2,))
    with pytest.raises(LookupError, match=r"not the previous-token head \(L0H3.*--layers 0"):
        paper.pick_head(t, "prev", "per_token")
    with pytest.raises(LookupError, match="holds no head"):
        paper.pick_head({**t, "per_token": t["per_token"].iloc[:0]}, "prev", "per_token")


def test_every_recipe_draws_from_synthetic_tables():
    t = {
        "band_norm": band_norm_frame(),
        "domains": {"italian": band_norm_frame(), "python": band_norm_frame()},
        "heads": heads_frame(),
        "per_token": per_token_frame(TOKENS),
        "decompose": decompose_frame(TOKENS, layer=3, head=2),
        "ablation": ablation_frame(),
        "apostrophe": heads_frame().assign(
            apostrophe_score=0.6, after_apos=0.7, others_sink=0.6, others_prev=0.1
        ),
    }
    t["profiles"] = t["band_norm"][t["band_norm"].kind != "v"].merge(
        t["heads"][["layer", "head", "head_class"]], on=["layer", "head"]
    )
    drawn = []
    for recipe in paper.RECIPES:
        try:
            recipe.draw(t, "tiny")
            drawn.append(recipe.key)
        except LookupError:
            pass  # e.g. no "semantic" head among the decomposed ones
    assert len(drawn) >= len(paper.RECIPES) - 4
    assert len({r.key for r in paper.RECIPES}) == len(paper.RECIPES)
