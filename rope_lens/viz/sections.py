"""Report sections: one per saved results table, recognised by its columns.

Each section holds the analysis module's own ``summarize`` text (computing stays in the
analyses), a sentence on what the paper reports for the same quantity, and the recipes of
:mod:`rope_lens.viz.paper` that the folder's tables can draw.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import numpy as np

from rope_lens.viz.paper import RECIPES, ROLES, Tables, pick_head
from rope_lens.viz.report import Attention, Section

log = logging.getLogger(__name__)

# kind -> (section title, analysis module, what it is, what the paper found)
SECTIONS = {
    "band_norm": (
        "Frequency usage (band norms)",
        "rope_lens.analyses.band_norms",
        "Mean 2-norm of every 2-D frequency chunk of the queries, keys and values, averaged over "
        "tokens (and over heads in the per-layer panels). By Cauchy–Schwarz a chunk's norm bounds "
        "how much that frequency can contribute to any attention logit. Rows are chunks with the "
        "highest frequency at the top, as in the paper.",
        "The paper (Gemma 7B, Figs 3, 13) finds the largest query and key norms in the lowest "
        "frequencies at every layer, some high-frequency use in the first and last layers, and no "
        "such pattern in the values, which RoPE never rotates.",
    ),
    "heads": (
        "Positional heads (head scores and classes)",
        "rope_lens.analyses.heads",
        "Mean attention of every head to the token itself (diagonal), to the previous token and "
        "to the first token (sink), over a corpus; a head is classed by the largest score when it "
        "reaches 1/2.",
        "The paper finds purely diagonal heads in the first and last layers of Gemma 7B and a "
        "previous-token head in the first layer (Figs 5, 14–16).",
    ),
    "profiles": (
        "Frequency profiles by head class",
        "rope_lens.analyses.profiles",
        "Each query head's q spectrum and its KV head's k spectrum, averaged within head classes.",
        "The paper's positional heads use the highest frequencies (Figs 4, 6, 11); most other heads "
        "carry their norm in the lowest frequencies (Fig 18).",
    ),
    "apostrophe": (
        "Apostrophe heads",
        "rope_lens.analyses.apostrophe",
        "Heads where a token right after an apostrophe attends to it and every other token "
        "attends to BOS.",
        "The paper's Gemma 7B Layer 1 Head 10 does this (Fig 7), with a low-frequency channel "
        "that pushes BOS up and other keys down (App. E.1).",
    ),
    "per_token": (
        "Per-token chunk norms and the Cauchy–Schwarz check",
        "rope_lens.analyses.per_token",
        "Chunk norms of one head's queries and keys token by token on one prompt, and each "
        "token's diagonal and previous-token logits against the bound ‖q‖‖k‖/√d.",
        "For the paper's diagonal heads the diagonal logit is close to the bound (q ≈ k); for the "
        "previous-token head the previous-token logit dominates (Tables 3–5, Figs 6, 14–18).",
    ),
    "decompose": (
        "Logit decomposition by frequency",
        "rope_lens.analyses.decompose",
        "Each attention logit split into per-chunk contributions (Eq. 3), on one prompt.",
        "In the paper's apostrophe head one low-frequency chunk (g_119) contributes ≈ −85 to "
        "non-BOS keys and ≈ +25 to the BOS key (Fig 12, App. E.1).",
    ),
    "ablation": (
        "Inference-time frequency ablations",
        "rope_lens.analyses.ablation",
        "Next-token loss and head scores when a band of chunks stops rotating (or is zeroed or "
        "replaced by its mean) in a pretrained model.",
        "Not in the paper, which ablates by training from scratch (Table 2); its reading predicts "
        "that un-rotating the lowest frequencies costs little and the highest costs positional "
        "heads.",
    ),
}


def _summary(module: str, df) -> str:
    """The analysis module's ``summarize(df)``, or "" when it fails (never lose the figures)."""
    try:
        return importlib.import_module(module).summarize(df)
    except Exception as err:
        log.warning("could not summarise with %s: %s", module, err)
        return ""


def inputs_line(meta: dict) -> str:
    """One sentence on what was analysed, from a table's sidecar."""
    parts = [f"model {meta.get('model', '?')}"]
    if meta.get("prompts"):
        parts.append(f"prompts '{meta['prompts']}' ({meta.get('n_texts', '?')} texts)")
    if meta.get("token_window"):
        parts.append(f"window {meta['token_window']} tokens")
    if "bos_counted" in meta:
        parts.append("BOS counted" if meta["bos_counted"] else "BOS excluded from statistics")
    return "Inputs: " + ", ".join(parts) + "."


def attention_views(t: Tables) -> list[Attention]:
    """circuitsvis views of the chosen heads when the decompose table has probabilities."""
    df = t.get("decompose")
    if df is None or "attention" not in df:
        return []
    views = []
    for role in ("diag-last", "prev", "apostrophe"):
        try:
            layer, head = pick_head(t, role, "decompose")
        except (LookupError, KeyError):
            continue
        sub = df[(df["layer"] == layer) & (df["head"] == head)].drop_duplicates(
            ["query_pos", "key_pos"]
        )
        n = int(sub["query_pos"].max()) + 1
        pattern = np.zeros((1, n, n))
        pattern[0, sub["query_pos"], sub["key_pos"]] = sub["attention"]
        # Label every position 0..n-1 (decompose may cover only some queries): token text from
        # whichever side of a pair saw that position.
        text = dict(zip(sub["key_pos"], sub["key_token"])) | dict(
            zip(sub["query_pos"], sub["query_token"])
        )
        toks = [str(text.get(i, "")) for i in range(n)]
        label = f"Layer {layer} Head {head}"
        views.append(Attention(toks, pattern, [label], f"{ROLES[role][1]}: {label}"))
    return views


def build_sections(tables: Tables, metas: dict[str, dict], model: str) -> list[Section]:
    """Sections in a fixed order for whichever tables are present."""
    sections = []
    for kind, (title, module, what, paper) in SECTIONS.items():
        if kind not in tables:
            continue
        summary = _summary(module, tables[kind])
        paragraphs = [what, paper, inputs_line(metas.get(kind, {}))]
        if kind == "ablation":
            from rope_lens.viz.ablation import ablated_scope

            paragraphs.append(f"Ablated here: {ablated_scope(tables[kind])}.")
        last = summary.strip().splitlines()[-1] if kind == "band_norm" and summary.strip() else ""
        if last:
            paragraphs.append(f"This model — {last} (thirds of the rotating chunks).")
        figures = []
        for recipe in RECIPES:
            if not recipe.in_report or recipe.needs[0] != kind:
                continue
            if not set(recipe.needs) <= set(tables):
                continue
            try:
                figures.append(recipe.draw(tables, model))
            except (LookupError, ValueError) as err:
                log.info("report: no %s (%s)", recipe.key, err)
        views = attention_views(tables) if kind == "decompose" else []
        sections.append(Section(title, paragraphs, figures, summary, views))
    if "head_explorer" in tables:
        from rope_lens.viz.head_page import explorer_section

        section = explorer_section(
            tables["head_explorer"], tables.get("heads"), tables.get("band_norm")
        )
        section.paragraphs.append(inputs_line(metas.get("head_explorer", {})))
        sections.append(section)
    return sections


def sections_from_folder(folder: str | Path, model=None) -> tuple[list[Section], dict]:
    """Sections for every recognised table in ``folder`` that belongs to ``model`` (a model
    identity; default: the model most of its tables share), and the first table's sidecar."""
    from rope_lens.tables import read_folder

    found = read_folder(folder, model)
    return sections_for(found), next(iter(found.metas.values()), {})


def sections_for(found) -> list[Section]:
    """Sections for the tables of a :class:`rope_lens.tables.Folder`."""
    from rope_lens.viz import beyond  # critical, massive values, sinks, passkey

    return build_sections(found.tables, found.metas, found.model) + beyond.sections_for_folder(
        None, found.tables
    )
