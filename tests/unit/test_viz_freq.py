"""Frequency-usage figures: orientation (high frequency on top), axes, hover text."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rope_lens.viz import freq
from tests.viz_frames import band_norm_frame


def _heatmaps(fig):
    return [t for t in fig.data if t.type == "heatmap"]


def test_layer_heatmap_puts_high_frequency_on_top():
    df = band_norm_frame()
    fig = freq.layer_frequency_heatmap(df, "k")
    (hm,) = _heatmaps(fig)
    assert list(hm.y) == list(range(8))  # row i is chunk i ...
    lo, hi = fig.layout.yaxis.range
    assert lo > hi  # ... on a reversed axis: chunk 0 (highest frequency) at the top
    # The high-frequency key bump of the fixture lands in row 0.
    z = np.asarray(hm.z)
    assert z[0].mean() > z[1:].mean() + 2
    assert list(hm.x) == [0, 1, 2, 3]


def test_axes_carry_frequency_and_wavelength():
    fig = freq.layer_frequency_heatmap(band_norm_frame(), "q")
    left, right = fig.layout.yaxis, fig.layout.yaxis2
    assert "frequency" in left.title.text and "wavelength" in right.title.text
    assert left.ticktext[0] == "1"  # chunk 0 of standard RoPE: 1 rad/token
    assert right.ticktext[0] == "6.28"  # ... wavelength 2*pi tokens
    assert tuple(left.range) == tuple(right.range)  # the two labellings line up
    assert list(left.tickvals) == list(right.tickvals)


def test_hover_names_layer_head_chunk_and_value():
    df = band_norm_frame()
    (hm,) = _heatmaps(freq.layer_frequency_heatmap(df, "q"))
    assert "chunk %{y}" in hm.hovertemplate and "%{z" in hm.hovertemplate
    assert "frequency" in hm.hovertemplate and "wavelength" in hm.hovertemplate
    cell = hm.customdata[0][2]
    assert cell[2].startswith("layer 2") and "mean over 4 query heads" in cell[2]
    (hm,) = _heatmaps(freq.head_frequency_heatmap(df, "k", layer=-1))
    assert hm.customdata[0][1][2] == "layer 3 · KV head 1 (KV head 1)"
    (hm,) = _heatmaps(freq.head_frequency_heatmap(df, "q", layer=0))
    assert hm.customdata[0][3][2] == "layer 0 · query head 3 (KV head 1)"


def test_value_heatmap_notes_values_are_not_rotated():
    (hm,) = _heatmaps(freq.layer_frequency_heatmap(band_norm_frame(), "v"))
    assert "not rotated" in hm.hovertemplate


def test_head_subset_for_one_kv_group():
    fig = freq.head_frequency_heatmap(band_norm_frame(), "q", layer=-1, heads=[2, 3])
    assert list(_heatmaps(fig)[0].x) == [2, 3]


def test_mixed_layer_types_use_per_cell_frequencies():
    types = ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"]
    df = band_norm_frame(layer_types=types)
    fig = freq.layer_frequency_heatmap(df, "q")
    sliding, full = _heatmaps(fig)  # one panel per layer type, each on its own frequency axis
    # Lowest chunk: sliding (theta 100) and full (theta 1e4) layers differ in the hover.
    assert sliding.customdata[-1][0][0] != full.customdata[-1][0][0]
    assert fig.layout.yaxis.ticktext != fig.layout.yaxis3.ticktext


def test_qkv_panels_have_one_heatmap_and_colorbar_each():
    fig = freq.qkv_panels(band_norm_frame())
    hms = _heatmaps(fig)
    assert len(hms) == 3
    xs = [h.colorbar.x for h in hms]
    assert xs == sorted(xs) and len(set(xs)) == 3
    titles = [a.text for a in fig.layout.annotations]
    assert any("Query" in t for t in titles) and any("Value" in t for t in titles)


def test_missing_kind_is_a_clear_error():
    df = band_norm_frame()
    with pytest.raises(ValueError, match="kind 'v'"):
        freq.layer_frequency_heatmap(df[df.kind != "v"], "v")


@pytest.mark.parametrize(
    "g, text", [(1.0, "1"), (0.2371, "0.24"), (2.06e-4, "2.1e-4"), (0.0, "0 (unrotated)")]
)
def test_fmt_frequency(g, text):
    assert freq.fmt_frequency(g) == text


@pytest.mark.parametrize("w, text", [(6.2832, "6.28"), (17_200.0, "17.2k"), (math.inf, "∞")])
def test_fmt_wavelength(w, text):
    assert freq.fmt_wavelength(w) == text


def test_chunk_ticks_include_both_ends():
    assert freq.chunk_ticks(128)[0] == 0 and freq.chunk_ticks(128)[-1] == 127
    assert freq.chunk_ticks(4) == [0, 1, 2, 3]
