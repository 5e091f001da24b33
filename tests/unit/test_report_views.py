"""Report views say what they show: attention views carry their layer and head, the ablation
section says which layers and heads were ablated, and layer types with their own RoPE base
(Gemma 3: sliding θ = 10k, full θ = 1M) get their own frequency axis."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from rope_lens.io import save_table
from rope_lens.viz import freq
from rope_lens.viz.ablation import ablated_scope, ablation_curves, head_survival
from rope_lens.viz.report import render_report, write_report
from rope_lens.viz.sections import build_sections, sections_from_folder
from tests.viz_frames import ablation_frame, band_norm_frame, decompose_frame, heads_frame

GEMMA3_TYPES = ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]


def _heatmaps(fig):
    return [t for t in fig.data if t.type == "heatmap"]


class TestLayerTypesGetTheirOwnAxis:
    def test_one_panel_per_layer_type_with_its_own_frequencies(self):
        df = band_norm_frame(layer_types=GEMMA3_TYPES)  # sliding θ = 1e2, full θ = 1e4 here
        fig = freq.layer_frequency_heatmap(df, "q")
        maps = _heatmaps(fig)
        assert len(maps) == 2
        assert [list(m.x) for m in maps] == [[0, 1, 3], [2]]  # sliding layers, then the full one
        titles = [a.text for a in fig.layout.annotations]
        assert any("sliding_attention layers (3), θ = 1e+02" in t for t in titles)
        assert any("full_attention layers (1), θ = 1e+04" in t for t in titles)
        # Each panel's left axis is labelled with its own frequencies, and no panel says it
        # borrowed another column's labels.
        left = [fig.layout.yaxis.ticktext, fig.layout.yaxis3.ticktext]
        assert left[0] != left[1]
        assert fig.layout.yaxis.title.text == "frequency (rad/token)"  # no "(layer 0)" borrowing
        assert maps[0].zmax == maps[1].zmax  # one colour scale across the panels

    def test_one_layer_type_stays_one_panel(self):
        fig = freq.layer_frequency_heatmap(band_norm_frame(), "k")
        assert len(_heatmaps(fig)) == 1 and list(_heatmaps(fig)[0].x) == [0, 1, 2, 3]

    def test_same_frequencies_in_two_types_stay_one_panel(self):
        df = band_norm_frame(layer_types=GEMMA3_TYPES)
        df["frequency"] = df.groupby("chunk")["frequency"].transform("max")
        assert len(freq.frequency_groups(df[df["kind"] == "q"])) == 1

    def test_qkv_panels_split_too(self):
        fig = freq.qkv_panels(band_norm_frame(layer_types=GEMMA3_TYPES))
        assert len(_heatmaps(fig)) == 6  # q, k, v x sliding, full


class TestAttentionViewsAreLabelled:
    def test_views_carry_layer_and_head(self, tmp_path):
        tokens = ["<bos>", "a", "b", "c"]
        tables = {"heads": heads_frame(), "decompose": decompose_frame(tokens, layer=3, head=2)}
        sections = build_sections(tables, {}, "tiny")
        views = [v for s in sections for v in s.attention]
        assert views and all(v.head_names == ["Layer 3 Head 2"] for v in views)
        assert all(v.title.endswith(": Layer 3 Head 2") for v in views)
        page = render_report(sections, "t")
        # The circuitsvis component that shows attentionHeadNames (AttentionPatterns ignores
        # them and labels every head "Head 0").
        calls = re.findall(
            r"CircuitsVis\.render\(\"[^\"]+\", CircuitsVis\.(\w+), (\{.*?\})\);", page
        )
        assert calls and {name for name, _ in calls} == {"AttentionHeads"}
        props = json.loads(calls[0][1])
        assert props["attentionHeadNames"] == ["Layer 3 Head 2"]

    @pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not on PATH")
    def test_browser_shows_the_labels(self, tmp_path):
        folder = tmp_path / "results"
        save_table(heads_frame(), folder / "heads", {"model": "tiny"})
        save_table(decompose_frame(["<bos>", "x", "y"], 3, 2), folder / "decompose", {})
        sections, _ = sections_from_folder(folder)
        path = write_report(render_report(sections, "labels"), tmp_path / "r.html")
        run = subprocess.run(
            [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
             "--dump-dom", path.as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        dom = run.stdout
        assert 'data-attention-rendered="' in dom and 'data-render-errors="0"' in dom
        assert "Layer 3 Head 2" in dom and "Head 0" not in dom


class TestAblationScope:
    def test_all_layers_and_heads(self):
        assert ablated_scope(ablation_frame()) == "every layer and head"

    def test_one_layer_and_some_heads(self):
        df = ablation_frame().assign(ablated_layers="3", ablated_heads="1,2")
        assert ablated_scope(df) == "layer 3, heads 1, 2"
        assert "ablated: layer 3, heads 1, 2" in ablation_curves(df).layout.title.text
        assert "ablated: layer 3, heads 1, 2" in head_survival(df).layout.title.text
        section = next(
            s for s in build_sections({"ablation": df}, {}, "tiny") if "ablation" in s.title
        )
        assert "Ablated here: layer 3, heads 1, 2." in section.paragraphs


def test_picked_layers_come_from_the_saved_scores(tmp_path):
    from rope_lens.viz.paper import picked_layers

    assert picked_layers(tmp_path) is None  # no head scores saved
    save_table(heads_frame(), tmp_path / "heads", {"model": "tiny"})
    layers = picked_layers(tmp_path)
    assert layers and all(0 <= int(x) < 4 for x in layers.split(","))


def test_fig18_says_how_to_get_the_entropy():
    """A heads table from a default run (no entropy): Fig 18's picker says how to get the
    column (the report reruns heads with --spread: test_faults_readers.py)."""
    from rope_lens.viz.paper import pick_head

    with pytest.raises(LookupError, match="--spread"):
        pick_head({"heads": heads_frame().drop(columns=["entropy"])}, "semantic", "heads")


def test_my_library_code_never_imports_the_cli():
    """viz, lens, theory and the figure-table script use the library (AnalysisRequest,
    pipeline), never ``rope_lens.commands`` or ``rope_lens.cli``."""
    import ast
    from pathlib import Path

    import rope_lens

    pkg = Path(rope_lens.__file__).parent
    files = [*pkg.glob("viz/*.py"), *pkg.glob("theory/*.py"), pkg / "lens.py"]
    files.append(pkg.parent / "figures" / "compute_results.py")
    bad = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n.startswith(("rope_lens.commands", "rope_lens.cli")) for n in names):
                bad.append(f"{path.name}:{node.lineno}")
    assert bad == []
