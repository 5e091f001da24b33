"""Assemble one self-contained, offline HTML report from figures and words.

The page inlines plotly.js once and (when an attention view is present) circuitsvis's browser
bundle once; nothing is fetched from a network. Safety, because prompts are user text:

- every string that reaches HTML goes through :func:`html.escape`;
- figure and attention data are embedded as JSON with ``<``, ``>`` and ``&`` written as
  ``\\u003c``-style escapes, so no string can close a ``<script>``;
- a Content-Security-Policy allows only scripts carrying this page's random nonce and no
  network connections, so even markup that slipped through could not run or phone home.

A tiny status script records uncaught errors and the number of rendered figures on ``<body>``
(``data-render-errors``, ``data-figures-rendered``) so a headless browser test can check them.
"""

from __future__ import annotations

import html
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from rope_lens.atomic import write_text
from rope_lens.viz.style import styled


@dataclass
class Attention:
    """One circuitsvis attention view: tokens, patterns ``[heads][query][key]`` and one name
    per head (shown on its selector tile, e.g. ``"L3 H2"``)."""

    tokens: list[str]
    patterns: Any  # array or nested lists, heads x query x key
    head_names: list[str]
    title: str = ""


@dataclass
class Section:
    """A report section: a heading, findings in words, figures and attention views.

    ``paragraphs`` and ``preformatted`` are plain text (escaped when rendered).
    """

    title: str
    paragraphs: list[str] = field(default_factory=list)
    figures: list[go.Figure] = field(default_factory=list)
    preformatted: str = ""
    attention: list[Attention] = field(default_factory=list)
    # Markup and script built by rope_lens code (the head explorer), user text already escaped
    # and data embedded with safe_json; the script runs with the page's nonce.
    html: str = ""
    script: str = ""


_CSS = """
body { font-family: DejaVu Sans, Arial, sans-serif; margin: 0 auto; max-width: 1500px;
       padding: 1em 2em; color: #222; background: white; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table.meta td { padding: .1em .8em .1em 0; vertical-align: top; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; font-size: .85em; }
.figure { margin: 1em 0; min-height: 300px; }
nav a { margin-right: 1em; }
.note { color: #666; font-size: .9em; }
table.heads { border-collapse: collapse; font-size: .85em; }
table.heads td, table.heads th { padding: .1em .6em; border-bottom: 1px solid #eee; }
"""

# Runs first: collects errors (and CSP violations) so tests and readers can see them.
_SENTINEL = """
window.__ropeLens = {errors: [], plots: []};
window.addEventListener('error', function (e) { window.__ropeLens.errors.push(String(e.message)); });
window.addEventListener('unhandledrejection', function (e) {
  window.__ropeLens.errors.push('unhandled rejection: ' + String(e.reason)); });
document.addEventListener('securitypolicyviolation', function (e) {
  window.__ropeLens.errors.push('CSP blocked ' + e.violatedDirective + ' ' + e.blockedURI); });
"""

_STATUS = """
function ropeLensStatus() {
  var plots = Array.prototype.filter.call(document.querySelectorAll('.js-plotly-plot'),
    function (el) { return el.querySelector('.main-svg') !== null; }).length;
  var views = Array.prototype.filter.call(document.querySelectorAll('.attention'),
    function (el) { return el.childElementCount > 0; }).length;
  var errors = window.__ropeLens.errors;
  document.body.setAttribute('data-figures-rendered', String(plots));
  document.body.setAttribute('data-attention-rendered', String(views));
  document.body.setAttribute('data-render-errors', String(errors.length));
  if (errors.length) {
    document.getElementById('render-errors').textContent = 'Rendering errors: ' + errors.join(' | ');
  }
}
// circuitsvis (React) renders asynchronously: give it a moment after the plots settle.
Promise.all(window.__ropeLens.plots).then(function () { setTimeout(ropeLensStatus, 300); },
  function (err) { window.__ropeLens.errors.push(String(err)); setTimeout(ropeLensStatus, 300); });
"""


HEAD_NAME = re.compile(r"\b(L\d+H\d+)\b")  # "L11H6": layer 11 head 6, as summaries write it

# React (inside circuitsvis) probes event support with an ``on...="return;"`` attribute; allowing
# exactly that handler text keeps the console clean without allowing any other inline handler.
# circuitsvis's tensorflow.js backend compiles WebAssembly, hence 'wasm-unsafe-eval' (not eval).
_REACT_PROBE = "sha256-i+qr4lq34KgNHiW62lWi9aInEBwiEOrfCzaNPCvkqD8="


def safe_json(obj: object) -> str:
    """JSON that is safe inside a ``<script>`` element (no ``<``, ``>`` or ``&`` characters)."""
    text = obj if isinstance(obj, str) else json.dumps(obj, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _figure_html(fig: go.Figure, div_id: str, nonce: str) -> str:
    from plotly.io.json import to_json_plotly

    styled(fig)
    d = fig.to_dict()
    data = safe_json(to_json_plotly(d.get("data", [])))
    layout = safe_json(to_json_plotly(d.get("layout", {})))
    height = int(d.get("layout", {}).get("height") or 500)
    return (
        f'<div class="figure" id="{div_id}" style="height:{height}px"></div>\n'
        f'<script nonce="{nonce}">window.__ropeLens.plots.push(Plotly.newPlot('
        f'"{div_id}", {data}, {layout}, {{"responsive": true, "displaylogo": false}}));</script>'
    )


def _attention_html(view: Attention, div_id: str, nonce: str) -> str:
    patterns = view.patterns.tolist() if hasattr(view.patterns, "tolist") else view.patterns
    # Token text goes in as text, escaped once, for the one context it lands in: a JSON string
    # inside <script> (safe_json). circuitsvis' AttentionHeads draws tokens on a canvas and
    # head names as React text nodes, neither of which parses HTML, so HTML-escaping them too
    # showed "&#x27;m" and "&lt;|im_start|&gt;" (tests/integration/test_report_browser.py).
    props = safe_json(
        {
            "tokens": [str(t) for t in view.tokens],
            "attention": patterns,
            "attentionHeadNames": [str(h) for h in view.head_names],
            "maskUpperTri": True,
        }
    )
    title = f"<h3>{html.escape(view.title)}</h3>" if view.title else ""
    # AttentionHeads, not the deprecated AttentionPatterns: only it reads attentionHeadNames
    # (AttentionPatterns labels every head "Head 0", "Head 1", ...).
    return (
        f'{title}<div id="{div_id}" class="attention"></div>\n'
        f'<script nonce="{nonce}">CircuitsVis.render("{div_id}", '
        f"CircuitsVis.AttentionHeads, {props});</script>"
    )


def _circuitsvis_js() -> str:
    """circuitsvis's own inline browser bundle (what its ``local_src`` embeds), read once."""
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    # As circuitsvis itself does: a literal closing tag would end the inline script early.
    return path.read_text(encoding="utf-8").replace("</script>", "")


def render_report(
    sections: Sequence[Section], title: str, meta: dict[str, object] | None = None
) -> str:
    """The complete HTML page as a string.

    Args:
        sections: report sections, in order.
        title: page title and heading (escaped).
        meta: key -> value shown in a table under the heading (values escaped via ``str``).
    """
    from plotly.offline import get_plotlyjs

    nonce = secrets.token_urlsafe(16)
    esc = html.escape
    has_attention = any(s.attention for s in sections) or any(s.html for s in sections)
    explorer = any('id="head-explorer"' in s.html for s in sections)
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}' 'wasm-unsafe-eval' 'unsafe-hashes' "
        f"'{_REACT_PROBE}'; style-src 'unsafe-inline'; img-src data: blob:; font-src data:; "
        "connect-src 'none'; worker-src blob:"
    )
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">',
        f"<title>{esc(title)}</title><style>{_CSS}</style>",
        f'<script nonce="{nonce}">{_SENTINEL}</script>',
        f'<script nonce="{nonce}">{get_plotlyjs()}</script>',
    ]
    if has_attention:
        head.append(f'<script nonce="{nonce}">{_circuitsvis_js()}</script>')
    head.append("</head>")
    body = [
        '<body data-figures-rendered="0" data-render-errors="-1">',
        f"<h1>{esc(title)}</h1>",
        '<p id="render-errors" class="note"></p>',
    ]
    if meta:
        rows = "".join(
            f"<tr><td><b>{esc(str(k))}</b></td><td>{esc(str(v))}</td></tr>" for k, v in meta.items()
        )
        body.append(f'<table class="meta">{rows}</table>')
    body.append(
        "<nav>"
        + "".join(f'<a href="#section-{i}">{esc(s.title)}</a>' for i, s in enumerate(sections))
        + "</nav>"
    )
    n_fig = 0
    for i, sec in enumerate(sections):
        body.append(f'<section id="section-{i}"><h2>{esc(sec.title)}</h2>')
        body.extend(f"<p>{esc(p)}</p>" for p in sec.paragraphs)
        if sec.preformatted:
            text = esc(sec.preformatted)
            if explorer:  # every head named in a summary links to its explorer page
                text = HEAD_NAME.sub(r'<a href="#head-\1">\1</a>', text)
            body.append(f"<details><summary>Summary table</summary><pre>{text}</pre></details>")
        for fig in sec.figures:
            body.append(_figure_html(fig, f"figure-{n_fig}", nonce))
            n_fig += 1
        for j, view in enumerate(sec.attention):
            body.append(_attention_html(view, f"attention-{i}-{j}", nonce))
        if sec.html:
            body.append(sec.html)
        if sec.script:
            body.append(f'<script nonce="{nonce}">{sec.script}</script>')
        body.append("</section>")
    body.append(f'<script nonce="{nonce}">{_STATUS}</script></body></html>')
    return "\n".join(head + body)


def write_report(page: str, path: str | Path) -> Path:
    """Write the page atomically (a reader never sees half a report)."""
    return write_text(path, page)
