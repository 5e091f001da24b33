"""The offline report in a real headless Chromium: renders, no errors, not blank, inert prompts.

Uses Debian's ``chromium`` (skipped when it is not on PATH). The report is built from saved
tables through ``rope-lens report``'s own path (band norms, head scores, per-token norms and a
decomposition with attention probabilities, so circuitsvis views are included). The prompt's
tokens, the model name and the prompt in the sidecar try to run script in three different ways;
if any of them ran, it would change ``document.title``.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from rope_lens.io import save_table
from rope_lens.viz.report import render_report, write_report
from rope_lens.viz.sections import sections_from_folder
from tests.viz_frames import band_norm_frame, decompose_frame, heads_frame, per_token_frame

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not on PATH (Debian: apt-get install chromium)"
)

TITLE = "rope-lens browser test"
EVIL = [
    "<bos>",
    "<script>document.title='PWNED'</script>",
    "<img/src=x/onerror=\"document.title='PWNED'\">",
    "I",
    "'",
    "m",
    "</script><script>document.title='PWNED'</script>",
]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--virtual-time-budget=15000",
]


def chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def png_pixels(path) -> np.ndarray:
    """RGB pixels of a PNG, as a ``[height, width, 3]`` array."""
    image = pytest.importorskip("PIL.Image", reason="Pillow (dev extra) decodes the screenshot")
    with image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int32)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    meta = {"model": "tiny<script>document.title='PWNED'</script>", "prompts": "".join(EVIL)}
    save_table(band_norm_frame(model=meta["model"]), folder / "band_norm", meta)
    save_table(heads_frame(), folder / "heads", meta)
    save_table(per_token_frame(EVIL), folder / "per_token", meta)
    # (3, 2) is the fixture's late diagonal head: the attention views pick it.
    save_table(decompose_frame(EVIL, layer=3, head=2), folder / "decompose", meta)
    sections, _ = sections_from_folder(folder)
    path = folder / "report.html"
    write_report(render_report(sections, TITLE, {"prompt": "".join(EVIL)}), path)
    return path


@needs_chromium
def test_report_is_self_contained(report):
    page = report.read_text(encoding="utf-8")
    # Nothing is loaded from elsewhere (the libraries' own code may mention URLs in strings).
    assert not re.search(r"<script[^>]*\bsrc\s*=", page)
    assert not re.search(r"<link[^>]*\bhref\s*=", page)
    assert page.count("Plotly.newPlot(") >= 2 and "var CircuitsVis" in page
    assert "<script>document.title" not in page  # every copy of the prompt is escaped


@needs_chromium
def test_report_renders_without_errors_and_prompt_is_inert(report, tmp_path):
    run = chromium(tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom", report.as_uri())
    dom = run.stdout
    assert 'data-render-errors="0"' in dom, dom[dom.find("render-errors") :][:400]
    page = report.read_text(encoding="utf-8")
    n_figures, n_views = page.count('class="figure"'), page.count('class="attention"')
    assert n_figures >= 10 and n_views >= 1
    assert f'data-figures-rendered="{n_figures}"' in dom
    assert f'data-attention-rendered="{n_views}"' in dom
    assert f"<title>{TITLE}</title>" in dom and "PWNED</title>" not in dom
    console = [ln for ln in run.stderr.splitlines() if "CONSOLE" in ln]
    bad = [ln for ln in console if "WebGL" not in ln and "GL Driver" not in ln]
    assert not bad, bad  # tensorflow.js's WebGL notices (circuitsvis) are the only allowed ones


@needs_chromium
def test_report_screenshot_is_not_blank(report, tmp_path):
    shot = tmp_path / "shot.png"
    chromium(tmp_path, "--window-size=1200,1600", f"--screenshot={shot}", report.as_uri())
    pixels = png_pixels(shot)
    assert pixels.std() > 20  # a blank page has ~0 variance
    # The heatmaps put many distinct colours on screen, not just text on white.
    colours = {tuple(p) for p in pixels[::8, ::8].reshape(-1, 3)}
    assert len(colours) > 50


@pytest.mark.slow
@needs_chromium
def test_model_report_runs_offline_and_renders(tmp_path):
    """`rope-lens report --model smollm2-135m` end to end on the packaged model, then a browser."""
    import argparse

    from rope_lens.commands import report as report_cmd

    parser = argparse.ArgumentParser()
    report_cmd.add_arguments(parser)
    folder = tmp_path / "smollm2"
    args = parser.parse_args(
        ["--model", "smollm2-135m", "--results", str(folder),
         "--analyses", "band-norm,heads,per-token,decompose",
         "--analyze-arg=--limit=1", "--analyze-arg=--max-len=32"]
    )  # fmt: skip
    assert report_cmd.run(args) == 0
    path = folder / "report.html"
    page = path.read_text(encoding="utf-8")
    assert not re.search(r"<(script|link|img)[^>]*\b(src|href)\s*=\s*[\"']?https?:", page)
    assert "Per-token chunk norms" in page and "Logit decomposition" in page
    n_figures = page.count('class="figure"')
    assert n_figures >= 10  # band norms, head classes, per-token heatmaps, CS tables, logits
    dom = chromium(tmp_path, "--dump-dom", path.as_uri()).stdout
    assert 'data-render-errors="0"' in dom
    assert f'data-figures-rendered="{n_figures}"' in dom


@needs_chromium
def test_token_text_is_shown_as_text_in_the_browser(tmp_path):
    """What a reader sees: ``'`` and ``<|im_start|>`` in circuitsvis' head labels and in plotly's
    token ticks, not ``&#x27;`` / ``&lt;|im_start|&gt;`` (the DOM dump serialises a text "<" as
    one "&lt;"; text escaped twice would read "&amp;lt;")."""
    import plotly.graph_objects as go

    from rope_lens.viz.report import Attention, Section
    from rope_lens.viz.tokens import token_label
    from tests.viz_frames import attention

    tokens = ["<|im_start|>", "I", "'m", " sure"]
    ticks = [token_label(t, p) for p, t in enumerate(tokens)]
    fig = go.Figure(go.Bar(x=ticks, y=[1, 2, 3, 4]))
    view = Attention(tokens, attention(len(tokens), heads=1), ["head it's <|im_start|>"])
    page = render_report([Section("tokens", figures=[fig], attention=[view])], TITLE)
    path = write_report(page, tmp_path / "tokens.html")
    dom = chromium(tmp_path, "--dump-dom", path.as_uri()).stdout
    assert 'data-render-errors="0"' in dom and 'data-attention-rendered="1"' in dom
    assert "head it's &lt;|im_start|&gt;</h4>" in dom  # circuitsvis head tile: plain text
    assert ">0: &lt;|im_start|&gt;</text>" in dom and ">2: 'm</text>" in dom  # plotly ticks
    shown = re.sub(r"<script.*?</script>", "", dom, flags=re.S)  # the libraries' own code
    shown = re.sub(r'data-unformatted="[^"]*"', "", shown)  # plotly keeps its input here
    assert "&amp;lt;" not in shown and "&amp;#x27;" not in shown and "&#x27;" not in shown


@needs_chromium
@pytest.mark.parametrize("key", ["L1H2", "L0H3"])
def test_head_explorer_page_opens_from_its_link(tiny_lm, tmp_path, key):
    """``report.html#head-L1H2`` opens that head's page: its title, four figures and its
    circuitsvis pattern render, offline, with no error; the page links every head."""
    from rope_lens.analyses.head_explorer import explore
    from rope_lens.viz.sections import sections_from_folder
    from tests.helpers import one_batch

    lm = tiny_lm("llama")
    batch = one_batch(lm, ["I'm sure it's the one <|im_start|> you'd like"])
    folder = tmp_path / "results"
    save_table(explore(lm, batch, range(lm.n_layers)), folder / "head_explorer",
               {"model": lm.name, "analysis": "head-explorer"})  # fmt: skip
    save_table(heads_frame(n_layers=lm.n_layers, n_heads=lm.n_heads), folder / "heads", {})
    sections, _ = sections_from_folder(folder)
    path = write_report(render_report(sections, TITLE), folder / "report.html")
    page = path.read_text(encoding="utf-8")
    assert f'href="#head-{key}"' in page
    dom = chromium(tmp_path, "--dump-dom", path.as_uri() + f"#head-{key}").stdout
    layer, head = key[1:].split("H")
    assert f'data-head="{key}"' in dom and 'data-render-errors="0"' in dom
    assert f'<h3 id="head-title">Layer {layer} Head {head} ({key})</h3>' in dom
    n_figures = page.count('class="figure')  # the explorer's four and the heads section's
    assert f'data-figures-rendered="{n_figures}"' in dom
    assert 'data-attention-rendered="1"' in dom
    assert f"Layer {layer} Head {head}</h4>" in dom  # circuitsvis' tile for this head
