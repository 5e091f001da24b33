"""Search for apostrophe heads (the paper's Fig 7, Gemma 7B Layer 1 Head 10).

In that head a token right after an apostrophe attends to the apostrophe and every other token
attends to BOS. Per head, over a corpus (reduced batch by batch, without a pattern on the
native backend: see ``heads.positional_weights``):

- ``after_apos``: mean alpha_{i,i-1} over queries whose previous token holds an apostrophe
  (' or U+2019);
- ``others_sink``: mean alpha_{i,0} over the other counted queries (i >= 1);
- ``others_prev``: mean alpha_{i,i-1} over those others: high for a generic previous-token head,
  low for an apostrophe head.

A head is apostrophe-like when ``after_apos`` and ``others_sink`` both reach 1/2 (the Lemma A.3
threshold of ``heads.THRESHOLD``); ``apostrophe_score`` = min of the two ranks the heads.
Tokenizers differ: BPE vocabularies (SmolLM2) fuse "'s", "'m" into one token while Gemma's
splits the apostrophe off, so "the token after an apostrophe" means the token after the one
holding it. ``decompose.bos_channels`` then explains a found head's logits by frequency.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from rope_lens.analyses.heads import THRESHOLD, positional_weights
from rope_lens.attention import pattern_hook
from rope_lens.errors import InputError
from rope_lens.extract import HookFn, run_batches
from rope_lens.inputs import Batch
from rope_lens.models.load import LoadedModel
from rope_lens.resume import resumable

APOSTROPHES = ("'", "\u2019")


class ApostropheReducer:
    """Per-head sums of the three scores; O(layers x heads) memory."""

    def __init__(self, lm: LoadedModel, layers: Sequence[int]) -> None:
        self.lm = lm
        self.layers = list(layers)
        self.sums: dict[int, torch.Tensor] = {}
        self.n_after = 0
        self.n_others = 0
        self._has_apos: dict[int, bool] = {}
        self._marks: tuple[Batch, torch.Tensor, torch.Tensor] | None = None

    def _apostrophe_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Bool mask of tokens holding an apostrophe (each distinct id decoded once)."""
        for i in ids.unique().tolist():
            if i not in self._has_apos:
                text = self.lm.tokenizer.decode([i])
                self._has_apos[i] = any(a in text for a in APOSTROPHES)
        flags = torch.tensor([self._has_apos[i] for i in ids.flatten().tolist()])
        return flags.view_as(ids).to(ids.device)

    def _query_masks(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        # Every layer's hook sees the same batch object: classify its queries (and count them)
        # once per batch, not once per layer.
        if self._marks is None or self._marks[0] is not batch:
            apos = self._apostrophe_tokens(batch.input_ids)
            after = torch.zeros_like(batch.count_mask)
            after[:, 1:] = apos[:, :-1] & batch.count_mask[:, 1:]
            others = batch.count_mask & ~after
            others[:, 0] = False
            self._marks = (batch, after, others)
            self.n_after += int(after.sum())
            self.n_others += int(others.sum())
        return self._marks[1], self._marks[2]

    # Native backend: a tap on the attention calls (weights from logits and log-sum-exp).
    needs_stats = True

    def edit(self, call) -> None:
        pass

    def observe(self, call) -> None:
        _, prev, sink = positional_weights(call)
        self._add(call.layer, prev, sink, call.batch)

    def plug(self) -> dict:
        """``run_batches`` keyword arguments that feed this reducer on ``lm``'s backend."""
        if self.lm.backend == "native":
            return {"taps": [self]}
        return {"hooks": self.hooks()}

    def hooks(self) -> list[tuple[str, HookFn]]:
        return [(pattern_hook(layer), self._hook(layer)) for layer in self.layers]

    def _hook(self, layer: int) -> HookFn:
        def fn(x: torch.Tensor, batch: Batch) -> None:
            p = x.detach().float()
            prev = torch.zeros_like(p[..., 0])  # (batch, head, pos): alpha_{i,i-1}, 0 at i = 0
            prev[..., 1:] = p.diagonal(-1, -2, -1)
            self._add(layer, prev, p[..., 0], batch)

        return fn

    def _add(self, layer: int, prev: torch.Tensor, sink: torch.Tensor, batch: Batch) -> None:
        after, others = self._query_masks(batch)
        a, o = after.to(prev.dtype)[:, None], others.to(prev.dtype)[:, None]
        sums = torch.stack(
            [(prev * a).sum((0, 2)), (sink * o).sum((0, 2)), (prev * o).sum((0, 2))]
        ).double()
        self.sums[layer] = self.sums[layer] + sums if layer in self.sums else sums

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Partial sums and counts, for a resume checkpoint (``rope_lens.resume``)."""
        tensors = {str(layer): t for layer, t in self.sums.items()}
        return tensors, {"n_after": self.n_after, "n_others": self.n_others}

    def load_state(self, tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        self.sums = {int(k): t.to(self.lm.device) for k, t in tensors.items()}
        self.n_after, self.n_others = int(extra["n_after"]), int(extra["n_others"])

    def to_frame(self) -> pd.DataFrame:
        rows = []
        for layer in sorted(self.sums):
            s = self.sums[layer].cpu()
            for head in range(s.shape[1]):
                rows.append(
                    {
                        "model": self.lm.name,
                        "layer": layer,
                        "layer_type": self.lm.rope.layer_types[layer],
                        "head": head,
                        "after_apos": float(s[0, head]) / max(self.n_after, 1),
                        "others_sink": float(s[1, head]) / max(self.n_others, 1),
                        "others_prev": float(s[2, head]) / max(self.n_others, 1),
                        "n_after": self.n_after,
                        "n_others": self.n_others,
                    }
                )
        df = pd.DataFrame(rows)
        df["apostrophe_score"] = df[["after_apos", "others_sink"]].min(axis=1)
        df["apostrophe_like"] = df.apostrophe_score >= THRESHOLD
        return df.sort_values("apostrophe_score", ascending=False, ignore_index=True)


def run(
    lm: LoadedModel,
    batch_iter,
    layers: Sequence[int],
    total: int | None = None,
    progress: bool = True,
    options: dict | None = None,
) -> pd.DataFrame:
    """Apostrophe scores for every head of ``layers``, best first (``options``: the
    pipeline's, for a resume checkpoint)."""
    reducer = ApostropheReducer(lm, layers)
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
    finished()
    if reducer.n_after == 0:
        raise InputError("no token follows an apostrophe in these prompts: nothing to score")
    return reducer.to_frame()


def analyze(
    lm: LoadedModel,
    make_batches,
    layers: Sequence[int],
    options: dict,
    progress: bool = True,
    total: int | None = None,
) -> pd.DataFrame:
    """Pipeline entry point (see ``rope_lens.pipeline``); resumes from a checkpoint."""
    return run(lm, make_batches(), layers, total=total, progress=progress, options=options)


def summarize(df: pd.DataFrame) -> str:
    """How many apostrophe-like heads, and the five best candidates."""
    lines = [
        f"{df.model.iloc[0]}: {int(df.apostrophe_like.sum())} apostrophe-like head(s) "
        f"(after_apos and others_sink >= {THRESHOLD}); {int(df.n_after.iloc[0])} queries follow "
        "an apostrophe"
    ]
    for r in df.head(5).itertuples():
        lines.append(
            f"L{r.layer}H{r.head}: after_apos {r.after_apos:.2f}, others_sink "
            f"{r.others_sink:.2f}, others_prev {r.others_prev:.2f}"
        )
    return "\n".join(lines)
