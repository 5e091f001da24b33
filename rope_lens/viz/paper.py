"""The paper's figures as recipes: which saved tables each needs and how to draw it.

``rope-lens figures`` (``rope_lens/commands/figures.py``) loads a results folder's tables,
recognises each by its columns (:func:`table_name_of`), and saves every recipe whose tables are
present. ``figures/README.md`` lists the recipes against the paper. Our models stand in for the
paper's: Gemma 3 270M for Gemma 7B (same head_dim 256) and SmolLM2-135M for Llama 3.1 8B
(Llama architecture with GQA); every recipe is drawn for every model that has the tables.

Heads for the per-token figures are chosen from the saved head scores, never by index: the
paper's layer numbering is ambiguous (its "Layer 1" and "Layer 27" of a 28-layer
Gemma 7B cannot both be 1-based) and our models differ anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from rope_lens.viz import ablation, freq, heads, tokens

Tables = Mapping[str, Any]  # table kind -> DataFrame ("domains": name -> DataFrame)

KIND_COLUMNS = {  # first match wins: more specific signatures first
    "decompose": {"contribution", "query_pos", "key_pos"},
    "per_token": {"pos", "token", "norm", "chunk"},
    "ablation": {"delta_loss", "band_lo", "band_hi"},
    "profiles": {"mean_norm", "chunk", "head_class"},
    "apostrophe": {"apostrophe_score", "after_apos"},
    "heads": {"diag_score", "prev_score", "head_class"},
    "band_norm": {"mean_norm", "kind", "chunk", "frequency"},
}


def table_name_of(df: pd.DataFrame, meta: Mapping[str, Any] | None = None) -> str | None:
    """Which analysis a table came from: its sidecar's ``analysis`` (the registered spec's
    table name), never a guess when the sidecar says; frames without one (built in memory)
    by their columns (None if unknown)."""
    from rope_lens.analyses.registry import SPECS

    name = (meta or {}).get("analysis")
    if name in SPECS:
        return SPECS[name].table
    cols = set(df.columns)
    return next((k for k, need in KIND_COLUMNS.items() if need <= cols), None)


@dataclass(frozen=True)
class Recipe:
    """One output figure: ``key`` (file stem), ``paper`` (figure it reproduces), ``needs``
    (table kinds), ``draw(tables, model) -> go.Figure`` and the static size (width, height).
    ``draw`` raises LookupError when the tables hold nothing suitable (the figure is skipped)."""

    key: str
    paper: str
    needs: tuple[str, ...]
    draw: Callable[[Tables, str], go.Figure]
    size: tuple[int, int] = (760, 520)
    in_report: bool = True  # False for panels the report already shows side by side


def _t(text: str, model: str, detail: str = "") -> str:
    """Title with the model (and e.g. which head was picked) as a smaller second line."""
    return f"{text}<br><sup>{detail + ' · ' if detail else ''}{model}</sup>"


# ---- head choice (from saved scores; only heads present in the per-token/decompose tables) --


def _best(df: pd.DataFrame, score: str, where=None) -> tuple[int, int]:
    sub = df if where is None else df[where(df)]
    if sub.empty:
        raise LookupError(f"no head to pick by {score}")
    r = sub.sort_values(score, ascending=False).iloc[0]
    return int(r["layer"]), int(r["head"])


def pick_head(t: Tables, role: str, within: str) -> tuple[int, int]:
    """(layer, head) for a paper role: ``diag-first``, ``diag-last``, ``prev``, ``apostrophe``,
    ``semantic``: the best head for it in the corpus scores (heads, apostrophe tables).

    Raises:
        LookupError: no head fits, or table ``within`` (per_token, decompose) does not hold
            that head: a panel of another head would claim to show this one.
    """
    if role == "apostrophe":
        layer, head = _best(t["apostrophe"], "apostrophe_score")
    else:
        layer, head = _role_head(t["heads"], role)
    held = t[within][["layer", "head"]].drop_duplicates()
    if not ((held["layer"] == layer) & (held["head"] == head)).any():
        have = [f"L{a}H{b}" for a, b in held.itertuples(index=False)]
        shown = ", ".join(have[:4]) + (f" and {len(have) - 4} more" if len(have) > 4 else "")
        raise LookupError(
            f"the {within} table holds {shown or 'no head'}, not the {ROLES[role][1]} "
            f"({describe(t, role, layer, head)}): rerun `rope-lens analyze --analysis "
            f"{within.replace('_', '-')} --layers {layer}` (rope-lens report does)"
        )
    return layer, head


def _role_head(h: pd.DataFrame, role: str) -> tuple[int, int]:
    # "early" / "late" halves of the model's layers (of the scored ones when unknown)
    mid = (h.attrs.get("n_layers") or int(h["layer"].max()) + 1) / 2 - 0.5
    if role == "diag-first":
        return _best(h, "diag_score", lambda d: d["layer"] <= mid)
    if role == "diag-last":
        return _best(h, "diag_score", lambda d: d["layer"] > mid)
    if role == "prev":
        return _best(h, "prev_score")
    if role == "semantic":  # the paper's Fig 18: diffuse attention, i.e. the highest entropy
        if "entropy" not in h:
            raise LookupError(
                "the heads table has no entropy column: rerun it with "
                "`rope-lens analyze --analysis heads --spread`"
            )
        return _best(h, "entropy", lambda d: d["head_class"] == "other")
    raise ValueError(role)


def check_whole(df: pd.DataFrame, what: str) -> None:
    """Refuse a decompose table computed for some query / key positions only (its sidecar's
    options, kept in ``df.attrs`` by ``rope_lens.tables``) as a full attention pattern.

    Raises:
        LookupError: naming the option to drop.
    """
    options = df.attrs.get("options") or {}
    given = {k: options[k] for k in ("query_pos", "key_pos") if options.get(k) is not None}
    if given:
        flags = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in given.items())
        raise LookupError(
            f"the decompose table was computed with {flags}: {what} needs every position; "
            "rerun decompose without them (rope-lens report does)"
        )


_ROLE_SCORE = {
    "diag-first": ("heads", "diag_score"),
    "diag-last": ("heads", "diag_score"),
    "prev": ("heads", "prev_score"),
    "apostrophe": ("apostrophe", "apostrophe_score"),
    "semantic": ("heads", "entropy"),
}


def describe(t: Tables, role: str, layer: int, head: int) -> str:
    """``"L3H2, diag_score 0.91, class diagonal"``: the picked head is the *best available*, so
    titles say how well it actually fits the role."""
    kind, score = _ROLE_SCORE[role]
    df = t[kind]
    r = df[(df["layer"] == layer) & (df["head"] == head)].iloc[0]
    cls = f", class {r['head_class']}" if "head_class" in r else ""
    return f"L{layer}H{head}, {score} {r[score]:.2f}{cls}"


ROLES = {  # role -> (paper figures of its per-token norms, label, output key prefix)
    "diag-first": ("Fig 14", "diagonal head, early layer", "fig14"),
    "diag-last": ("Fig 15", "diagonal head, late layer", "fig15"),
    "prev": ("Fig 16", "previous-token head", "fig16"),
    "apostrophe": ("Fig 17", "apostrophe head", "fig17"),
    "semantic": ("Fig 18", "semantic (diffuse) head", "fig18"),
}


def picked_layers(folder, model: Mapping[str, Any] | None = None) -> str | None:
    """Layers of the heads the per-token figures will show, picked from a results folder's
    saved scores (``"3,17,29"``), or None when no head scores are saved. ``rope-lens report``
    and ``figures/compute_results.py`` run per-token and decompose on these layers only.
    ``model``: a model identity; scores of another model are not used."""
    from rope_lens.tables import read_folder

    tables = read_folder(folder, model, kinds=("heads", "apostrophe")).tables
    if "heads" not in tables:
        return None
    layers = set()
    for role in ROLES:
        try:
            own = "apostrophe" if role == "apostrophe" else "heads"
            layers.add(pick_head(tables, role, own)[0])
        except (LookupError, KeyError):  # e.g. no apostrophe table: that role is skipped
            pass
    return ",".join(map(str, sorted(layers))) or None


def _token_recipe(role: str, kind: str) -> Recipe:
    fig, label, prefix = ROLES[role]
    also = {"diag-last": ", Fig 6", "apostrophe": ", Fig 7(b)" if kind == "k" else ""}.get(role, "")
    part = "a" if kind == "q" else "b"
    needs = ("per_token", "apostrophe" if role == "apostrophe" else "heads")

    def draw(t: Tables, model: str) -> go.Figure:
        layer, head = pick_head(t, role, "per_token")
        name = "Query" if kind == "q" else "Key"
        title = _t(f"{name} frequency usage, {label}", model, describe(t, role, layer, head))
        return tokens.token_norm_heatmap(t["per_token"], layer, head, kind, title)

    return Recipe(
        f"{prefix}{part}_{kind}_tokens_{role}", f"{fig}({part}){also}", needs, draw, (900, 560)
    )


def _pattern_recipe(role: str, value: str, key: str, paper: str) -> Recipe:
    def draw(t: Tables, model: str) -> go.Figure:
        df = t["decompose"]
        if value not in df:
            raise LookupError(f"the decompose table has no {value!r} column")
        check_whole(df, "a full attention pattern")
        layer, head = pick_head(t, role, "decompose")
        what = "Attention pattern" if value == "attention" else "Attention logits"
        title = _t(f"{what}, {ROLES[role][1]}", model, describe(t, role, layer, head))
        return tokens.pair_heatmap(df, layer, head, value, title)

    needs = ("decompose", "apostrophe" if role == "apostrophe" else "heads")
    return Recipe(key, paper, needs, draw, (760, 700))


def _cs_recipe(role: str, table: str) -> Recipe:
    def draw(t: Tables, model: str) -> go.Figure:
        layer, head = pick_head(t, role, "per_token")
        return tokens.cs_table_figure(
            t["per_token"],
            layer,
            head,
            title=_t(f"{table}: {ROLES[role][1]}", model, describe(t, role, layer, head)),
        )

    return Recipe(
        f"{table.lower().replace(' ', '')}_cs_{role}",
        table,
        ("per_token", "heads"),
        draw,
        (1100, 340),
    )


def _contributions(t: Tables, model: str) -> go.Figure:
    df = t["decompose"]
    check_whole(df, "the last query's contributions to keys 0, q - 1 and q")
    layer, head = pick_head(t, "apostrophe", "decompose")
    sub = df[(df["layer"] == layer) & (df["head"] == head)]
    q = int(sub["query_pos"].max())
    return tokens.contribution_bars(
        df,
        layer,
        head,
        q,
        [0, q - 1, q],
        _t("Logit by frequency, apostrophe head", model, describe(t, "apostrophe", layer, head)),
    )


def _band(kind: str, label: str, layer: int | None = None):
    def draw(t: Tables, model: str) -> go.Figure:
        df = t["band_norm"]
        if layer is None:
            return freq.layer_frequency_heatmap(df, kind, _t(label, model))
        n_layers = df.attrs.get("n_layers")
        if n_layers is not None:  # the model's first / last layer, not the table's
            want = range(n_layers)[layer]
            if want not in set(df["layer"]):
                raise LookupError(
                    f"the band_norm table holds layers {_span(df['layer'])}, not the model's "
                    f"{'first' if layer == 0 else 'last'} layer {want}: rerun band-norm with "
                    f"--layers {want} (or all layers)"
                )
        shown = sorted(df["layer"].unique())[layer]
        return freq.head_frequency_heatmap(
            df, kind, int(shown), title=_t(f"{label} (layer {shown})", model)
        )

    return draw


def _span(layers) -> str:
    values = sorted(set(int(x) for x in layers))
    return ", ".join(map(str, values)) if len(values) <= 4 else f"{values[0]}-{values[-1]}"


def _domains(t: Tables, model: str) -> go.Figure:
    frames = t["domains"]
    order = {name: i for i, name in enumerate(("italian", "chinese", "python", "arithmetic"))}
    ranked = sorted(frames.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
    panels = {f"({chr(97 + i)}) {name}": df for i, (name, df) in enumerate(ranked)}
    return freq.band_norm_panels(
        panels,
        kind="q",
        title=_t("Query frequency usage per layer by input domain", model),
        shared_scale=True,
    )


def _simple(kind: str, fn) -> Callable[[Tables, str], go.Figure]:
    return lambda t, model: fn(t[kind])


RECIPES: list[Recipe] = [
    Recipe("fig03a_query_per_layer", "Fig 3(a), Fig 10(a)", ("band_norm",), _band("q", "Query frequency usage per layer"), in_report=False),
    Recipe("fig03b_key_per_layer", "Fig 3(b), Fig 10(b)", ("band_norm",), _band("k", "Key frequency usage per layer"), in_report=False),
    Recipe("fig13c_value_per_layer", "Fig 13(c), Fig 10(c)", ("band_norm",), _band("v", "Value frequency usage per layer"), in_report=False),
    Recipe("fig13_qkv_per_layer", "Fig 13, Fig 10", ("band_norm",), lambda t, m: freq.qkv_panels(t["band_norm"], _t("q, k, v frequency usage per layer", m)), (1500, 520)),
    Recipe("fig04a_query_per_head_first_layer", "Fig 4(a)", ("band_norm",), _band("q", "Query frequency usage", 0)),
    Recipe("fig04b_key_per_head_first_layer", "Fig 4(b)", ("band_norm",), _band("k", "Key frequency usage", 0)),
    Recipe("fig11_query_per_head_last_layer", "Fig 11", ("band_norm",), _band("q", "Query frequency usage", -1)),
    Recipe("extra_frequency_profile", "(Figs 3/13 summarised)", ("band_norm",), lambda t, m: freq.frequency_profile(t["band_norm"], _t("Mean chunk norm by frequency", m))),
    Recipe("fig19_query_by_domain", "Fig 19", ("domains",), _domains, (1700, 520)),
    Recipe("extra_head_classes", "checklist 11 (head scores)", ("heads",), _simple("heads", heads.head_class_map), (700, 800)),
    Recipe("extra_head_scores", "checklist 11 (head scores)", ("heads",), _simple("heads", heads.head_score_scatter), (700, 600)),
    Recipe("extra_profile_by_class", "Figs 4/11 by head class", ("profiles",), _simple("profiles", heads.profile_by_class), (1200, 500)),
    Recipe("extra_apostrophe_search", "Fig 7 (head search)", ("apostrophe",), _simple("apostrophe", heads.apostrophe_scores), (1000, 500)),
    *[_token_recipe(role, kind) for role in ROLES for kind in ("q", "k")],
    _pattern_recipe("diag-last", "attention", "fig05a_attention_diagonal", "Fig 5(a), 15(c)"),
    _pattern_recipe("prev", "attention", "fig05b_attention_previous", "Fig 5(b), 16(c)"),
    _pattern_recipe("apostrophe", "attention", "fig07a_attention_apostrophe", "Fig 7(a), 17(c)"),
    _pattern_recipe("apostrophe", "model_score", "fig12_logits_apostrophe", "Fig 12"),
    Recipe("appE1_contributions_apostrophe", "App. E.1 (chunk contributions)", ("decompose", "apostrophe"), _contributions, (1000, 500)),
    _cs_recipe("diag-first", "Table 3"),
    _cs_recipe("diag-last", "Table 4"),
    _cs_recipe("prev", "Table 5"),
    Recipe("extra_ablation_loss", "checklist 20 (ablation)", ("ablation",), _simple("ablation", ablation.ablation_curves)),
    Recipe("extra_ablation_heads", "checklist 20 (ablation)", ("ablation",), _simple("ablation", ablation.head_survival), (1100, 500)),
]  # fmt: skip


def register(recipe: Recipe) -> None:
    """Add (or replace) a recipe."""
    RECIPES[:] = [r for r in RECIPES if r.key != recipe.key] + [recipe]
