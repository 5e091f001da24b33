"""Head scores and head classes: which heads are diagonal, previous-token or BOS-sink heads.

The paper's positional heads (Figs 5, 14-16; Definition 5.1) are found by eye in Gemma 7B; here
they are found by scores computed over a corpus for every layer and head, reduced batch by
batch so memory never grows with the number of tokens. On the native backend no ``[T, T]``
tensor exists at all: each score needs one logit per query plus the row's log-sum-exp, which
the model's own fused attention kernel returns beside its output
(``rope_lens.engine.kernels.attention_stats``). On the TransformerLens backend each batch's
``hook_pattern`` is reduced to per-head sums and dropped.

Scores, each a mean over counted query positions i (``Batch.count_mask``: real tokens, BOS
excluded unless ``--count-bos``; padding never counts):

- ``diag_score``: mean alpha_{i,i} (attention to itself).
- ``prev_score``: mean alpha_{i,i-1} over counted queries with i >= 1 (position 0 has no
  previous token). With a BOS prepended, the first real token's previous token *is* BOS, so for
  that query prev_score and sink_score count the same probability.
- ``sink_score``: mean alpha_{i,0}, attention to the first position (BOS when prepended, else the
  first token). With ``--count-bos`` the BOS query itself counts, and its whole row is on BOS
  (alpha_{0,0} = 1 enters diag_score and sink_score alike).

With ``--spread`` (``spread=True``), two columns describe how spread out each head's attention
is; they are opt-in because, done exactly, they cost about a second attention pass per layer
(a value of ``[v, k, j]`` instead of ``v``), where the three scores above cost one dot product
per query and score on top of the model's own kernel:

- ``mean_distance``: mean of sum_j alpha_{i,j} (i - j), in tokens.
- ``entropy``: mean of -sum_j alpha_{i,j} log alpha_{i,j}, in nats.

With learned sink logits (gpt-oss) each row's softmax has one more logit that belongs to no
key: every alpha_{i,j} above is the model's own weight (the sink in the denominator), the
keys' weights sum to less than 1, and the two spread columns are sums over the keys only.
The sink's own share, mean exp(sink - lse_i), is the column ``learned_sink_score`` (only in
tables of models that have learned sinks; the sinks analysis reports it too).

Classes (``classify``): the largest of diag / prev / sink names the class when it reaches
``THRESHOLD`` = 0.5, else "other". Why 1/2: by Lemma A.3 of the paper, a key with more than half
of the attention must carry the query's strictly largest logit, so the head's pattern is
genuinely that key for the average query, and at most one of the three can pass (up to the
shared BOS query noted above).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from rope_lens.attention import pattern_hook
from rope_lens.engine import kernels
from rope_lens.extract import HookFn, run_batches
from rope_lens.inputs import Batch
from rope_lens.models.load import LoadedModel
from rope_lens.resume import resumable

POSITIONAL = ("diag_score", "prev_score", "sink_score")
SPREAD = ("mean_distance", "entropy")  # opt-in: ``spread=True``
SCORES = POSITIONAL + SPREAD
CLASSES = ("diagonal", "previous-token", "sink", "other")
THRESHOLD = 0.5


def score_columns(spread: bool) -> tuple[str, ...]:
    """The score columns a table has: the positional three, and the spread two if asked."""
    return SCORES if spread else POSITIONAL


def columns(spread: bool, learned: bool = False) -> list[str]:
    head = ["model", "layer", "layer_type", "head", "kv_head"]
    extra = [LEARNED] if learned else []
    return [*head, *score_columns(spread), *extra, "head_class", "n_queries"]


LEARNED = "learned_sink_score"  # a learned sink logit's share of the row (gpt-oss)


def present_scores(df: pd.DataFrame) -> list[str]:
    """The score columns of a saved or computed table (the spread two only when measured)."""
    return [c for c in SCORES if c in df.columns]


def pattern_sums(
    pattern: Float[Tensor, "batch head pos key_pos"], count: Tensor, spread: bool = True
) -> tuple[Float[Tensor, "score head"], int]:
    """Per-head sums of the five scores over counted queries of one batch.

    Args:
        pattern: attention probabilities; query and key slots are positions 0..T-1 (right
            padding, so slot index == position).
        count: ``[batch, pos]`` bool, the queries to count.

    Returns:
        Sums in the order of ``score_columns(spread)`` (fp64) and the number of counted
        queries.
    """
    p = pattern.float()
    w = count.to(p.dtype)[:, None, :]  # (batch, 1, pos)
    n_pos = p.shape[-1]
    slots = torch.arange(n_pos, device=p.device, dtype=p.dtype)
    diag = p.diagonal(0, -2, -1)  # (batch, head, pos)
    prev = p.diagonal(-1, -2, -1)  # (batch, head, pos - 1): queries 1..T-1
    sink = p[..., 0]
    sums = [(diag * w).sum((0, 2)), (prev * w[..., 1:]).sum((0, 2)), (sink * w).sum((0, 2))]
    if spread:
        # sum_j a_ij (i - j) = i sum_j a_ij - sum_j a_ij j: one matvec instead of a T x T
        # distance matrix (rows sum to less than 1 where a learned sink takes a share).
        dist = slots * p.sum(-1) - torch.matmul(p, slots)
        ent = -torch.special.xlogy(p, p).sum(-1)
        sums += [(dist * w).sum((0, 2)), (ent * w).sum((0, 2))]
    return torch.stack(sums).double(), int(count.sum())


def positional_weights(call) -> tuple[Tensor, Tensor, Tensor]:
    """alpha_{i,i}, alpha_{i,i-1} (0 at i = 0) and alpha_{i,0} of every query of a native
    attention call, each ``[batch, head, pos]``, from one logit each and the row's
    log-sum-exp (``call.stats``): no pattern is built, and GQA keys are not repeated."""
    q = call.query.float()
    k = call.key.float()
    scale, cap, window, chunk = call.scaling, call.softcap, call.window, call.chunk
    lse = call.stats.lse  # includes a learned sink logit where the model has one
    diag = torch.exp(kernels.pair_scores(q, k, 0, scale, cap) - lse)
    prev = torch.exp(kernels.pair_scores(q, k, 1, scale, cap) - lse)  # -inf logit at i = 0
    sink = torch.exp(kernels.first_key_scores(q, k, scale, cap) - lse)
    if window is not None or chunk is not None:  # keys the mask hides carry no weight
        n = q.shape[-2]
        sink = sink * kernels.visible_first(n, window, chunk, q.device)
        prev = prev * kernels.visible_offset(n, 1, window, chunk, q.device)
    return diag, prev, sink


def call_sums(call, spread: bool = False) -> tuple[Float[Tensor, "score head"], int]:
    """:func:`pattern_sums` from a native attention call, without the pattern (see
    ``engine.kernels``): entropy = lse - sum_j a_ij s_ij, distance = i - sum_j a_ij j."""
    diag, prev, sink = positional_weights(call)
    stats, count = call.stats, call.batch.count_mask
    w = count.to(diag.dtype)[:, None, :]
    sums = [
        (diag * w).sum((0, 2)),
        (prev[..., 1:] * w[..., 1:]).sum((0, 2)),
        (sink * w).sum((0, 2)),
    ]
    if spread:
        assert stats.pos_mean is not None and stats.score_mean is not None, "no spread stats"
        slots = torch.arange(diag.shape[-1], device=diag.device, dtype=diag.dtype)
        mass = 1.0 if stats.key_mass is None else stats.key_mass  # < 1 with a learned sink
        dist = slots * mass - stats.pos_mean
        ent = stats.lse * mass - stats.score_mean
        sums += [(dist * w).sum((0, 2)), (ent * w).sum((0, 2))]
    return torch.stack(sums).double(), int(count.sum())


class HeadScoreReducer:
    """Streaming head scores for ``layers``; O(layers x heads) memory whatever the corpus.

    ``prev_score`` is normalised by its own count (queries with i >= 1), the others by
    ``n_queries``. ``spread`` adds ``mean_distance`` and ``entropy`` (about a second attention
    pass per layer on the native backend).
    """

    def __init__(self, lm: LoadedModel, layers: Sequence[int], spread: bool = False) -> None:
        self.lm = lm
        self.layers = list(layers)
        self.spread = spread
        self.needs_spread = spread
        self.sums: dict[int, Tensor] = {}
        self.n: dict[int, int] = {}
        self.n_prev: dict[int, int] = {}
        self.learned: dict[int, Tensor] = {}  # per layer with learned sinks: sum of their share

    # Native backend: a tap on the attention calls of ``layers``.
    needs_stats = True

    def edit(self, call) -> None:
        pass

    def observe(self, call) -> None:
        sums, n = call_sums(call, self.spread)
        self._add(call.layer, sums, n, call.batch.count_mask)
        if call.sinks is not None:
            share = torch.exp(call.sinks.to(call.stats.lse)[None, :, None] - call.stats.lse)
            w = call.batch.count_mask.to(share.dtype)[:, None, :]
            total = (share * w).sum((0, 2)).double()
            layer = call.layer
            self.learned[layer] = self.learned[layer] + total if layer in self.learned else total

    def plug(self) -> dict:
        """``run_batches`` keyword arguments that feed this reducer on ``lm``'s backend."""
        if self.lm.backend == "native":
            return {"taps": [self]}
        return {"hooks": self.hooks()}

    def hooks(self) -> list[tuple[str, HookFn]]:
        return [(pattern_hook(layer), self._hook(layer)) for layer in self.layers]

    def _hook(self, layer: int) -> HookFn:
        def fn(x: Tensor, batch: Batch) -> None:
            self.update(layer, x.detach(), batch.count_mask)

        return fn

    def update(
        self, layer: int, pattern: Float[Tensor, "batch head pos key_pos"], count: Tensor
    ) -> None:
        sums, n = pattern_sums(pattern, count, self.spread)
        self._add(layer, sums, n, count)

    def _add(self, layer: int, sums: Tensor, n: int, count: Tensor) -> None:
        self.sums[layer] = self.sums[layer] + sums if layer in self.sums else sums
        self.n[layer] = self.n.get(layer, 0) + n
        self.n_prev[layer] = self.n_prev.get(layer, 0) + int(count[:, 1:].sum())

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Partial sums and counts, for a resume checkpoint (``rope_lens.resume``)."""
        tensors = {str(layer): t for layer, t in self.sums.items()}
        tensors.update({f"learned/{layer}": t for layer, t in self.learned.items()})
        return tensors, {"n": dict(self.n), "n_prev": dict(self.n_prev)}

    def load_state(self, tensors: dict[str, Tensor], extra: dict[str, Any]) -> None:
        for key, t in tensors.items():
            if key.startswith("learned/"):
                self.learned[int(key.split("/")[1])] = t.to(self.lm.device)
                continue
            layer = int(key)
            self.sums[layer] = t.to(self.lm.device)
            self.n[layer] = int(extra["n"][key])
            self.n_prev[layer] = int(extra["n_prev"][key])

    def to_frame(self) -> pd.DataFrame:
        lm = self.lm
        names = score_columns(self.spread)
        rows = []
        for layer in sorted(self.sums):
            group = lm.group(layer)
            sums = self.sums[layer].cpu()
            n, n_prev = max(self.n[layer], 1), max(self.n_prev[layer], 1)
            learned = self.learned.get(layer)
            for head in range(sums.shape[1]):
                means = (sums[:, head] / n).tolist()
                means[1] = float(sums[1, head]) / n_prev
                extra = {LEARNED: float(learned[head]) / n if learned is not None else 0.0}
                rows.append(
                    {
                        "model": lm.name,
                        "layer": layer,
                        "layer_type": lm.rope.layer_types[layer],
                        "head": head,
                        "kv_head": head // group,
                        **dict(zip(names, means)),
                        **(extra if self.learned else {}),
                        "n_queries": self.n[layer],
                    }
                )
        df = pd.DataFrame(rows)
        df["head_class"] = classify(df)
        return df[columns(self.spread, learned=bool(self.learned))]


def classify(df: pd.DataFrame, threshold: float = THRESHOLD) -> pd.Series:
    """diagonal / previous-token / sink where that score is the largest of the three and at
    least ``threshold``; "other" otherwise."""
    trio = df[["diag_score", "prev_score", "sink_score"]]
    names = trio.idxmax(axis=1).map(
        {"diag_score": "diagonal", "prev_score": "previous-token", "sink_score": "sink"}
    )
    return names.where(trio.max(axis=1) >= threshold, "other")


def run(
    lm: LoadedModel,
    batch_iter,
    layers: Sequence[int],
    total: int | None = None,
    progress: bool = True,
    options: dict | None = None,
    spread: bool = False,
) -> pd.DataFrame:
    """Head-score table for ``layers`` over every counted query of ``batch_iter``
    (``options``: the pipeline's, for a resume checkpoint; ``spread``: add mean distance and
    entropy)."""
    reducer = HeadScoreReducer(lm, layers, spread)
    skip, after_batch, finished = resumable(options or {}, [reducer])
    run_batches(
        lm,
        batch_iter,
        last_layer=max(layers),
        total=total,
        progress=progress,
        skip=skip,
        after_batch=after_batch,
        **reducer.plug(),
    )
    df = reducer.to_frame()
    finished()
    return df


def analyze(
    lm: LoadedModel,
    make_batches,
    layers: Sequence[int],
    options: dict,
    progress: bool = True,
    total: int | None = None,
) -> pd.DataFrame:
    """Pipeline entry point (see ``rope_lens.pipeline``); resumes from a checkpoint."""
    spread = bool(options.get("spread"))
    return run(
        lm, make_batches(), layers, total=total, progress=progress, options=options, spread=spread
    )


def summarize(df: pd.DataFrame) -> str:
    """Head counts per class and the five strongest heads by each positional score, in aligned
    columns. Scores are cut (not rounded) to three decimals, so a score just under the
    threshold reads 0.499, never a misleading 0.500 beside class "other"."""
    counts = df.head_class.value_counts()
    n_queries = int(df.n_queries.iloc[0]) if len(df) else 0
    lines = [
        f"{df.model.iloc[0]}: {len(df)} heads, {n_queries:,} counted queries per layer. A head's "
        f"class is its largest score when that score is >= {THRESHOLD} (else other).",
        f"{'class':<15}  {'heads':>5}",
        *(f"{c:<15}  {int(counts.get(c, 0)):>5}" for c in CLASSES),
        "",
        f"{'score':<11}  {'rank':>4}  {'layer':>5}  {'head':>4}  {'value':>6}  class"
        "  (values cut to 3 decimals)",
    ]
    for score in ("diag_score", "prev_score"):
        top = df.sort_values(score, ascending=False).head(5)
        for rank, r in enumerate(top.itertuples(), 1):
            lines.append(
                f"{score:<11}  {rank:>4}  {r.layer:>5}  {r.head:>4}  "
                f"{math.floor(float(getattr(r, score)) * 1000 + 1e-9) / 1000:>6.3f}  {r.head_class}"
            )
    return "\n".join(lines)
