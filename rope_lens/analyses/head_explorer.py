"""What the head explorer shows about every head, computed on one prompt (drawing is
``rope_lens.viz.head_page``; this module only computes).

For each (layer, head) of one short prompt:

- ``pattern``: its attention weights, every causal (query, key) pair (the model's own);
- ``spectrum``: the mean chunk norm of its queries and of its KV head's keys over the prompt's
  counted tokens (post-rotation vectors: rotation keeps chunk norms), chunk 0 = highest
  frequency;
- ``scores``: its diagonal / previous-token / sink scores on the prompt and its class
  (``rope_lens.analyses.heads``; the report prefers the corpus scores of a saved heads table);
- ``logits``: the per-frequency decomposition of one query's logits against every key
  (``rope_lens.analyses.decompose``, Eq. 3): what each chunk adds to each logit;
- ``ablation``: its rotation-ablation effect: the change of its own three scores when the lowest
  or the highest half of its layer's chunks stop rotating (rotation-free, only that layer edited,
  so the head's input is unchanged and the change is its own), and the layer-wide loss change.

One long table, a row per number: ``record`` says which of the above, ``label`` the token,
score or class name, ``value`` the number. Tokens are stored once (``record == "token"``: the
position, its text and its id).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from rope_lens.analyses import ablation, decompose, heads, per_token
from rope_lens.analyses.head_options import heads_or_all, parse_positions, select_prompt
from rope_lens.attention import capture_attention
from rope_lens.errors import InputError
from rope_lens.inputs import Batch
from rope_lens.models.load import LoadedModel

COLUMNS = [
    "record",
    "model",
    "layer",
    "head",
    "kv_head",
    "kind",
    "query_pos",
    "key_pos",
    "chunk",
    "frequency",
    "band",
    "label",
    "value",
]
RECORDS = ("token", "pattern", "spectrum", "scores", "logits", "ablation")
SCORES = ("diag_score", "prev_score", "sink_score")
MAX_TOKENS = 128  # a T x T pattern per head: the explorer is for one short prompt


def explore(
    lm: LoadedModel,
    batch: Batch,
    layers: Sequence[int],
    heads_: Sequence[int] | None = None,
    query_pos: int | None = None,
    ablate: bool = True,
) -> pd.DataFrame:
    """The explorer's table for a one-row ``batch`` (``heads_``: query heads, default all;
    ``query_pos``: the query whose logits are decomposed, default the last; ``ablate``: the
    rotation-ablation rows, two forward passes per layer)."""
    n_pos = int(batch.input_ids.shape[1])
    if n_pos > MAX_TOKENS:
        raise InputError(
            f"the head explorer reads one short prompt (at most {MAX_TOKENS} tokens, got "
            f"{n_pos}): pass --max-len {MAX_TOKENS} or a shorter prompt"
        )
    chosen = list(range(lm.n_heads)) if heads_ is None else list(heads_)
    query = n_pos - 1 if query_pos is None else int(query_pos)
    frames = [
        _tokens(lm, batch),
        _patterns(lm, batch, layers, chosen),
        _spectra(lm, batch, layers, chosen),
        _scores(lm, batch, layers, chosen),
        _logits(lm, batch, layers, chosen, query),
    ]
    if ablate:
        frames.append(_ablation(lm, batch, layers, chosen))
    out = pd.concat([f for f in frames if len(f)], ignore_index=True).reindex(columns=COLUMNS)
    ints = ["layer", "head", "kv_head", "query_pos", "key_pos", "chunk"]
    return out.astype({c: "Int64" for c in ints})  # absent where a record has no such index


def _rows(record: str, lm: LoadedModel, **cols) -> pd.DataFrame:
    return pd.DataFrame({"record": record, "model": lm.name, **cols})


def _tokens(lm: LoadedModel, batch: Batch) -> pd.DataFrame:
    ids = batch.input_ids[0].tolist()
    texts = per_token.token_strings(lm, ids)
    return _rows("token", lm, query_pos=np.arange(len(texts)), label=texts, value=ids)


def _patterns(lm, batch, layers, chosen) -> pd.DataFrame:
    patterns = capture_attention(lm, batch, layers)
    n = int(batch.input_ids.shape[1])
    q_idx, k_idx = np.tril_indices(n)
    frames = []
    for layer in layers:
        group = lm.group(layer)
        for head in chosen:
            w = patterns[layer][0, head].numpy()
            frames.append(
                _rows(
                    "pattern",
                    lm,
                    layer=layer,
                    head=head,
                    kv_head=head // group,
                    query_pos=q_idx,
                    key_pos=k_idx,
                    value=w[q_idx, k_idx],
                )  # fmt: skip
            )
    return pd.concat(frames, ignore_index=True)


def _spectra(lm, batch, layers, chosen) -> pd.DataFrame:
    df = per_token.head_token_frame(lm, batch, layers, chosen)
    counted = batch.count_mask[0].numpy()
    df = df[counted[df["pos"].to_numpy()]]
    mean = df.groupby(["layer", "head", "kv_head", "kind", "chunk"], sort=True).agg(
        value=("norm", "mean"), frequency=("frequency", "first")
    )
    return _rows("spectrum", lm, **mean.reset_index().to_dict("list"))


def _scores(lm, batch, layers, chosen) -> pd.DataFrame:
    table = heads.run(lm, iter([batch]), layers, progress=False)
    table = table[table["head"].isin(chosen)]
    long = table.melt(
        id_vars=["layer", "head", "kv_head", "head_class"], value_vars=list(SCORES),
        var_name="label", value_name="value",
    )  # fmt: skip
    classes = table.assign(label="class:" + table["head_class"], value=1.0)  # its class
    both = pd.concat([long, classes[long.columns]], ignore_index=True)
    return _rows("scores", lm, **both.drop(columns="head_class").to_dict("list"))


def _logits(lm, batch, layers, chosen, query: int) -> pd.DataFrame:
    df = decompose.decompose(lm, batch, layers, chosen, query_pos=[query])
    return _rows(
        "logits", lm, layer=df["layer"], head=df["head"], kv_head=df["kv_head"],
        query_pos=df["query_pos"], key_pos=df["key_pos"], chunk=df["chunk"],
        frequency=df["frequency"], label=df["key_token"], value=df["contribution"],
    )  # fmt: skip


def _ablation(lm, batch, layers, chosen) -> pd.DataFrame:
    """Per layer: the lowest / highest half of its chunks rotation-free, that layer alone."""
    configs, which = [], []
    for layer in layers:
        n = lm.rope.n_chunks(layer)
        for band, (lo, hi) in (("low", (n - n // 2, n)), ("high", (0, n // 2))):
            configs.append(ablation.Ablation("rotation-free", lo, hi, (layer,)))
            which.append((layer, band, lo, hi))
    table = ablation.run_ablations(
        lm, lambda: iter([batch]), configs, score_layers=list(layers), progress=False
    )
    frames = []
    for (layer, band, lo, hi), ab in zip(which, configs):
        rows = table[
            (table["ablation"] == ab.kind)
            & (table["band_lo"] == lo)
            & (table["band_hi"] == hi)
            & (table["ablated_layers"] == _layers_label(lm, ab.layers))
            & (table["layer"] == layer)
            & (table["head"].isin(chosen))
        ]
        long = rows.melt(
            id_vars=["layer", "head", "kv_head"], value_vars=[f"d_{s}" for s in SCORES],
            var_name="label", value_name="value",
        )  # fmt: skip
        loss = rows.assign(label="d_loss_layer", value=rows["delta_loss"])[long.columns]
        part = pd.concat([long, loss], ignore_index=True)
        frames.append(_rows("ablation", lm, band=band, chunk=lo, **part.to_dict("list")))
    return pd.concat(frames, ignore_index=True)


def _layers_label(lm: LoadedModel, layers: tuple[int, ...]) -> str:
    """How ``ablation._rows`` names the ablated layers."""
    return "all" if len(layers) == lm.n_layers else ",".join(map(str, layers))


def analyze(
    lm: LoadedModel,
    make_batches,
    layers: Sequence[int],
    options: dict,
    progress: bool = True,
    total: int | None = None,
) -> pd.DataFrame:
    """Pipeline entry point: ``--prompt-index`` picks the prompt, ``--head`` one head (every
    head when omitted), ``--query-pos`` the query whose logits are decomposed (the last)."""
    chosen = heads_or_all(lm, options.get("head"))
    batch = select_prompt(make_batches, int(options.get("prompt_index") or 0))
    n_pos = int(batch.input_ids.shape[1])
    positions = parse_positions(options.get("query_pos"), n_pos)
    if positions is not None and len(positions) != 1:
        raise InputError("--query-pos for the head explorer is one position, e.g. 5 or -1")
    query = None if positions is None else positions[0]
    return explore(lm, batch, layers, chosen, query)


def records(df: pd.DataFrame, record: str) -> pd.DataFrame:
    """The rows of one ``record``, without the columns it does not use."""
    return df[df["record"] == record].dropna(axis=1, how="all")


def summarize(df: pd.DataFrame) -> str:
    """Which heads, which prompt, and the heads that depend most on their rotation."""
    tokens = records(df, "token")
    abl = records(df, "ablation")
    n_heads = len(records(df, "scores").drop_duplicates(["layer", "head"]))
    lines = [
        f"{df.model.iloc[0]}: head explorer for {n_heads} heads on a {len(tokens)}-token prompt "
        f"({''.join(tokens.label.astype(str))[:60]!r})"
    ]
    if len(abl):
        own = abl[abl.label.isin([f"d_{s}" for s in SCORES])]
        worst = own.reindex(own.value.abs().sort_values(ascending=False).index).head(5)
        lines.append("largest own-score changes when half of a layer's chunks stop rotating:")
        for r in worst.itertuples():
            lines.append(
                f"  L{int(r.layer)}H{int(r.head)}: {r.label} {r.value:+.3f} ({r.band} half)"
            )
    return "\n".join(lines)
