"""Rotation ablations at inference: what a pretrained model loses when a band of frequency
chunks stops rotating, is zeroed, or is replaced by its mean. This extends the paper (Barbero
et al., ICLR 2025), which only ablates frequencies by training from scratch (§6.1, Table 2).

For the chunks [lo, hi) (chunk 0 = highest frequency) of q and k, in the chosen layers and
(optionally) one query head:

- ``rotation-free``: the chunk keeps its pre-rotation value (angle 0), i.e. NoPE on that band.
  The lowest band is an inference-time p-RoPE (``--sweep low``), the highest its reverse.
- ``zero``: the chunk is set to 0 in q and k, so the band adds nothing to any logit.
- ``mean``: the pre-rotation chunk is replaced by its mean over the corpus' counted tokens
  (BOS excluded, measured in the baseline pass) and then rotated as usual: content is removed,
  the positional signal a constant vector carries (Thm 5.3's q = k = psi) is kept.

Every position is edited, BOS included, unless ``spare_first`` is set: then position 0 (BOS
when prepended) keeps its vectors, which separates "the band carries content" from "the band
makes BOS an attention sink" (the paper's apostrophe head uses a low band for the latter).

Mechanics. Native backend (default): the band of q and k is edited inside the attention call,
before the model's own kernel runs (``AblationTap``); the pre-rotation values are the post-
rotation ones un-rotated with the layer's frequencies. To ablate one query head alone although
its key is shared with its GQA group, keys and values are repeated to one per query head and
only that head's copy is edited. TransformerLens backend: ``hook_attn_scores`` of the affected
heads is replaced by scores recomputed from the same forward's q/k with the band edited (the
causal / sliding-window mask kept from the model's own scores, the model's scaling and softcap
applied). A test checks that the two backends agree.

Measured per configuration, over the same held-out batches as an unablated baseline:
next-token loss in nats/token over counted targets (predictions of tokens with
``count_mask``: real tokens after BOS), and every head's scores (``heads.HeadScoreReducer``),
with their change from the baseline. Memory is that of one batch plus O(layers x heads x
d_head) accumulators, whatever the number of batches (nothing is kept across batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from rope_lens import distributed
from rope_lens.analyses import heads as head_scores
from rope_lens.analyses.head_options import check_head, parse_band
from rope_lens.analyses.registry import read_option
from rope_lens.attention import model_scaling, scores_hook
from rope_lens.attention import softcap as model_softcap
from rope_lens.errors import InputError
from rope_lens.extract import (
    HookFn,
    Site,
    SiteTap,
    heads_of,
    hook_name,
    reducer_hooks,
    run_batches,
    to_bphd,
)
from rope_lens.inputs import Batch
from rope_lens.models.load import LoadedModel
from rope_lens.resume import PassCache
from rope_lens.rope import chunk_dims, rotate

ABLATIONS = ("rotation-free", "zero", "mean")
SWEEPS = ("low", "high", "both")


@dataclass(frozen=True)
class Ablation:
    """One configuration: ``kind`` on chunks [lo, hi) of ``layers`` (``heads``: query heads,
    None = all). ``sweep`` labels sweep points ("low" / "high"; "" for a single run);
    ``spare_first`` leaves position 0 unedited."""

    kind: str
    lo: int
    hi: int
    layers: tuple[int, ...]
    heads: tuple[int, ...] | None = None
    sweep: str = ""
    spare_first: bool = False

    @property
    def empty(self) -> bool:
        return self.hi <= self.lo or not self.layers


class MeanReducer:
    """Sum of pre-rotation q and k over counted tokens, per (layer, head, d_head)."""

    def __init__(self, lm: LoadedModel, layers: Sequence[int]) -> None:
        self.sites = [Site(layer, kind, "pre") for layer in layers for kind in "qk"]
        self.device = lm.device
        self.sums: dict[Site, Tensor] = {}
        self.n = 0

    def update(self, site: Site, x: Float[Tensor, "batch pos head d_head"], batch: Batch) -> None:
        w = batch.count_mask.to(x.dtype)[:, :, None, None]
        total = (x * w).sum((0, 1)).double()
        self.sums[site] = self.sums[site] + total if site in self.sums else total
        if site == self.sites[0]:
            self.n += batch.n_counted

    def means(self) -> dict[Site, Float[Tensor, "head d_head"]]:
        return {site: (s / max(self.n, 1)).float() for site, s in self.sums.items()}

    # Resumable protocol (rope_lens.resume), used to merge data-parallel shards.
    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        return {f"{s.layer}/{s.kind}": t for s, t in self.sums.items()}, {"n": self.n}

    def load_state(self, tensors: dict[str, Tensor], extra: dict[str, Any]) -> None:
        for s in self.sites:
            key = f"{s.layer}/{s.kind}"
            if key in tensors:
                self.sums[s] = tensors[key].to(self.device)
        self.n = int(extra.get("n", 0))


class LossMeter:
    """Next-token negative log-likelihood summed over counted targets."""

    def __init__(self) -> None:
        self.nll = 0.0
        self.n = 0

    def __call__(self, logits: Float[Tensor, "batch pos vocab"], batch: Batch) -> None:
        targets = batch.input_ids[:, 1:]
        weight = batch.count_mask[:, 1:]
        for row in range(logits.shape[0]):  # one row at a time: log-softmax over a big vocab
            logp = torch.log_softmax(logits[row, :-1].float(), dim=-1)
            nll = -logp.gather(-1, targets[row, :, None])[:, 0]
            self.nll += float(nll[weight[row]].double().sum())
        self.n += int(weight.sum())

    @property
    def loss(self) -> float:
        return self.nll / max(self.n, 1)

    def require_targets(self, analysis: str) -> None:
        """Refuse a loss over no targets (it would read as a perfect 0.0000).

        Raises:
            InputError: no counted next-token target in any text.
        """
        if self.n == 0:
            raise InputError(
                f"{analysis}: no next-token target to measure a loss on (every text is one "
                "counted token); give longer texts (or drop --no-bos / add --count-bos)"
            )

    # Resumable protocol (rope_lens.resume), used to merge data-parallel shards.
    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        return {"nll": torch.tensor([self.nll], dtype=torch.float64)}, {"n": self.n}

    def load_state(self, tensors: dict[str, Tensor], extra: dict[str, Any]) -> None:
        self.nll = float(tensors["nll"].sum()) if "nll" in tensors else 0.0
        self.n = int(extra.get("n", 0))


def edit_band(
    x: Float[Tensor, "batch pos head d_head"],
    dims: Tensor,
    kind: str,
    pre: Tensor | None,
    mean: Tensor | None,
    positions: Tensor,
    spec,
    spare_first: bool = False,
) -> Float[Tensor, "batch pos head d_head"]:
    """Post-rotation vectors ``x`` with the band's dims replaced (see the module docstring)."""
    out = x.clone()
    if kind == "rotation-free":
        assert pre is not None, "rotation-free needs the pre-rotation vectors"
        out[..., dims] = pre[..., dims].to(x.dtype) * spec.attention_scaling
    elif kind == "zero":
        out[..., dims] = 0
    elif kind == "mean":
        assert mean is not None, "the mean ablation needs the baseline means"
        const = mean.to(x.device, torch.float64).expand(*x.shape[:2], *mean.shape)
        out[..., dims] = rotate(const, positions, spec)[..., dims].to(x.dtype)
    else:
        raise InputError(f"unknown ablation {kind!r}; choose from {', '.join(ABLATIONS)}")
    if spare_first:
        out[:, 0] = x[:, 0]
    return out


class _LayerEdit:
    """One ablated layer: remember this forward's q/k (pre and post rotation), then replace the
    affected heads' pre-softmax scores by scores recomputed with the band edited."""

    def __init__(self, lm: LoadedModel, ab: Ablation, layer: int, means) -> None:
        self.lm, self.ab, self.layer, self.means = lm, ab, layer, means
        self.spec = lm.rope.layer_specs[layer]
        pairs = chunk_dims(self.spec.head_dim, self.spec.rotary_dim, self.spec.pairing)
        self.dims = pairs[ab.lo : ab.hi].reshape(-1)
        self.scale, self.cap = model_scaling(lm, layer), model_softcap(lm, layer)
        self.q_heads = torch.arange(lm.n_heads) if ab.heads is None else torch.tensor(ab.heads)
        self.kv_of_q = self.q_heads // lm.group(layer)
        self.state: dict[str, Tensor] = {}

    def hooks(self) -> list[tuple[str, HookFn]]:
        out = []
        for kind in "qk":
            for stage in ("pre", "rot"):
                name = hook_name(self.lm, Site(self.layer, kind, stage))
                out.append((name, self._keep(f"{kind}_{stage}", name, kind)))
        return out + [(scores_hook(self.layer), self.replace)]

    def _keep(self, key: str, name: str, kind: str) -> HookFn:
        def fn(x: Tensor, batch: Batch) -> None:
            self.state[key] = to_bphd(name, x, heads_of(self.lm, kind, self.layer))

        return fn

    def replace(self, scores: Float[Tensor, "batch head pos key_pos"], batch: Batch) -> Tensor:
        edited = {}
        for kind in "qk":
            mean = self.means[Site(self.layer, kind, "pre")] if self.ab.kind == "mean" else None
            edited[kind] = edit_band(
                self.state[f"{kind}_rot"],
                self.dims.to(scores.device),
                self.ab.kind,
                self.state[f"{kind}_pre"],
                mean,
                batch.positions,
                self.spec,
                self.ab.spare_first,
            )
        self.state.clear()  # nothing outlives the forward pass
        q = edited["q"][:, :, self.q_heads]  # (batch, pos, h, d_head)
        k = edited["k"][:, :, self.kv_of_q]  # the KV head each of those query heads reads
        new = torch.einsum("bqhd,bkhd->bhqk", q, k) * self.scale
        if self.cap:
            new = torch.tanh(new / self.cap) * self.cap
        old = scores[:, self.q_heads]
        # Keep the model's own mask (causal, padding, sliding window) where it applies.
        masked = old <= torch.finfo(old.dtype).min / 2
        out = scores.clone()
        out[:, self.q_heads] = torch.where(masked, old, new.to(old.dtype))
        return out


class AblationTap:
    """Native backend: edit the band of q and k inside the attention call, before the kernel.

    With all heads, q and k are edited in place (GQA keys once per KV head). With chosen query
    heads, keys and values are first repeated to one per query head so that only those heads'
    copies change, which is what replacing their scores does on the TransformerLens backend.
    """

    needs_stats = False
    stateless = True  # an edit that keeps nothing: data-parallel passes may shard around it

    def __init__(self, lm: LoadedModel, ab: Ablation, means) -> None:
        self.ab, self.means = ab, means
        self.layers = list(ab.layers)
        self.heads = None if ab.heads is None else torch.tensor(ab.heads)
        self.dims = {
            layer: chunk_dims(
                lm.rope.layer_specs[layer].head_dim,
                lm.rope.layer_specs[layer].rotary_dim,
                lm.rope.layer_specs[layer].pairing,
            )[ab.lo : ab.hi].reshape(-1)
            for layer in self.layers
        }

    def _edited(self, call, kind: str) -> Tensor:
        mean = self.means[Site(call.layer, kind, "pre")] if self.ab.kind == "mean" else None
        out = edit_band(
            call.bphd(kind, "rot"),
            self.dims[call.layer].to(call.query.device),
            self.ab.kind,
            call.bphd(kind, "pre"),
            mean,
            call.batch.positions,
            call.spec,
            self.ab.spare_first,
        )
        return out.transpose(1, 2).to(call.query.dtype)  # back to [batch, head, pos, d_head]

    def edit(self, call) -> None:
        q, k = self._edited(call, "q"), self._edited(call, "k")
        if self.heads is None:
            call.query, call.key = q, k
            return
        heads = self.heads.to(q.device)
        group = call.group
        query = call.query.clone()
        query[:, heads] = q[:, heads]
        key = call.keys_per_query_head().clone()
        key[:, heads] = k.repeat_interleave(group, dim=1)[:, heads] if group > 1 else k[:, heads]
        value = call.value.repeat_interleave(group, dim=1) if group > 1 else call.value
        call.query, call.key, call.value = query, key, value
        call._cache.clear()

    def observe(self, call) -> None:
        pass


def ablation_hooks(lm: LoadedModel, ab: Ablation, means: dict[Site, Tensor] | None = None) -> list:
    """What applies ``ab`` on ``lm``'s backend: TransformerLens hooks, or one native tap
    (nothing for an empty band: exactly the unablated model)."""
    if ab.empty:
        return []
    if ab.kind == "mean" and means is None:
        raise InputError("the mean ablation needs the baseline means (run `run_ablations`)")
    if lm.backend == "native":
        return [AblationTap(lm, ab, means)]
    return [hook for layer in ab.layers for hook in _LayerEdit(lm, ab, layer, means).hooks()]


def measure(
    lm: LoadedModel,
    make_batches,
    hooks: Sequence,  # ablation_hooks(): TransformerLens hooks or native taps
    score_layers: Sequence[int],
    extra: Sequence = (),
    total: int | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> tuple[float, int, pd.DataFrame]:
    """One pass: (loss nats/token, counted targets, head-score frame) under ``hooks``.
    ``extra``: q/k reducers fed in the same pass (the baseline's means)."""
    meter = LossMeter()
    scores = head_scores.HeadScoreReducer(lm, score_layers)
    if lm.backend == "native":
        taps = list(hooks) + ([SiteTap(extra)] if extra else []) + [scores]
        run_batches(
            lm,
            make_batches(),
            on_logits=meter,
            total=total,
            progress=progress,
            desc=desc,
            taps=taps,
        )
    else:
        tl_hooks = list(hooks) + reducer_hooks(lm, extra) + scores.hooks()
        run_batches(
            lm, make_batches(), tl_hooks, on_logits=meter, total=total, progress=progress, desc=desc
        )
    meter.require_targets("ablation")
    return meter.loss, meter.n, scores.to_frame()


def sweep_configs(
    kind: str,
    sweep: str,
    n_chunks: int,
    layers: Sequence[int],
    heads,
    points: int,
    spare_first: bool = False,
) -> list[Ablation]:
    """Bands of the m lowest (``low``) / highest (``high``) chunks, m on ``points`` even steps
    up to all chunks (with ``both``, the all-chunks band is run once, labelled ``low``)."""
    if sweep not in SWEEPS:
        raise InputError(f"unknown --sweep {sweep!r}; choose from none, {', '.join(SWEEPS)}")
    if points < 1:
        raise InputError(f"--sweep-points must be >= 1, got {points}")
    sizes = sorted({max(1, round(n_chunks * s / points)) for s in range(1, points + 1)})
    out = []
    for side in ("low", "high") if sweep == "both" else (sweep,):
        for m in sizes:
            lo, hi = (n_chunks - m, n_chunks) if side == "low" else (0, m)
            if side == "high" and sweep == "both" and m == n_chunks:
                continue
            out.append(
                Ablation(kind, lo, hi, tuple(layers), heads, sweep=side, spare_first=spare_first)
            )
    return out


def run_ablations(
    lm: LoadedModel,
    make_batches,
    configs: Sequence[Ablation],
    score_layers: Sequence[int] | None = None,
    total: int | None = None,
    progress: bool = True,
    cache: PassCache | None = None,
) -> pd.DataFrame:
    """Baseline pass, then one pass per configuration; tidy frame, one row per
    (configuration, layer, head), baseline rows with ``ablation == "none"``. ``cache``: finished
    passes are saved there and skipped by a rerun (see ``rope_lens.resume.PassCache``)."""
    score_layers = list(lm.rope.attention_layers) if score_layers is None else list(score_layers)
    mean_layers = sorted({layer for c in configs if c.kind == "mean" for layer in c.layers})
    means_red = MeanReducer(lm, mean_layers) if mean_layers else None
    hit = cache.get(0) if cache is not None else None
    if not distributed.agree_all(hit is not None):  # data-parallel: skip only what all kept
        hit = None
    if hit is not None:
        (scalars, base, tensors) = hit
        base_loss, n_tok = scalars["loss"], scalars["n"]
        means = {_site(k): t.to(lm.device) for k, t in tensors.items()} or None
    else:
        base_loss, n_tok, base = measure(
            lm,
            make_batches,
            [],
            score_layers,
            [means_red] if means_red else [],
            total,
            progress,
            desc="baseline",
        )
        means = means_red.means() if means_red else None
        if cache is not None:
            saved = {f"{s.layer}/{s.kind}": t for s, t in (means or {}).items()}
            cache.put(0, {"loss": base_loss, "n": n_tok}, base, saved)
    frames = [_rows(lm, Ablation("none", 0, 0, ()), base, base, base_loss, base_loss, n_tok, 1)]
    for index, ab in enumerate(configs, 1):
        hit = cache.get(index) if cache is not None else None
        if not distributed.agree_all(hit is not None):  # data-parallel: skip only what all kept
            hit = None
        if hit is not None:
            loss, n, scores = hit[0]["loss"], hit[0]["n"], hit[1]
        else:
            loss, n, scores = measure(
                lm,
                make_batches,
                ablation_hooks(lm, ab, means),
                score_layers,
                (),
                total,
                progress,
                desc=f"{ab.kind} {ab.lo}:{ab.hi}",
            )
            if cache is not None:
                cache.put(index, {"loss": loss, "n": n}, scores)
        n_chunks = common_chunks(lm, ab.layers)
        frames.append(_rows(lm, ab, scores, base, loss, base_loss, n, n_chunks))
    return pd.concat(frames, ignore_index=True)


def _site(key: str) -> Site:
    layer, kind = key.split("/")
    return Site(int(layer), kind, "pre")


def _rows(lm, ab: Ablation, scores, base, loss, base_loss, n_tok, n_chunks) -> pd.DataFrame:
    df = scores.rename(columns={"head_class": "class_ablated"})
    df.insert(1, "ablation", ab.kind)
    df.insert(2, "sweep", ab.sweep)
    df.insert(3, "band_lo", ab.lo)
    df.insert(4, "band_hi", ab.hi)
    df.insert(5, "band_fraction", (ab.hi - ab.lo) / n_chunks)
    all_layers = set(ab.layers) == {i for i in lm.rope.attention_layers if lm.rope.rotates(i)}
    df.insert(6, "ablated_layers", "all" if all_layers else ",".join(map(str, ab.layers)))
    df.insert(7, "ablated_heads", "all" if ab.heads is None else ",".join(map(str, ab.heads)))
    df.insert(8, "loss", loss)
    df.insert(9, "base_loss", base_loss)
    df.insert(10, "delta_loss", loss - base_loss)
    df.insert(11, "n_targets", n_tok)
    df.insert(12, "spare_first", ab.spare_first)
    df["base_class"] = base.head_class.to_numpy()
    for col in head_scores.present_scores(df):
        df[f"d_{col}"] = df[col].to_numpy() - base[col].to_numpy()
    return df.drop(columns=["n_queries"])


def common_chunks(lm: LoadedModel, layers: Sequence[int]) -> int:
    """The chunk count every ablated layer shares. A band is chunk indices counted from the
    highest frequency (or, negative, from the lowest), so it means the same frequencies only
    in layers of one head size (Gemma 4's full layers have twice the sliding ones' chunks)."""
    counts: dict[int, list[int]] = {}
    for layer in layers:
        counts.setdefault(lm.rope.n_chunks(layer), []).append(layer)
    if len(counts) > 1:
        parts = "; ".join(f"{n} chunks in layers {_span(ls)}" for n, ls in sorted(counts.items()))
        raise InputError(
            f"{lm.name} has heads of different sizes ({parts}): a band would name different "
            "frequencies in each; ablate one kind at a time with --layers"
        )
    return next(iter(counts), lm.rope.n_chunks(0))


def _span(layers: list[int]) -> str:
    return ",".join(map(str, layers)) if len(layers) <= 6 else f"{layers[0]}..{layers[-1]}"


def rotating_layers(lm: LoadedModel, layers: Sequence[int]) -> list[int]:
    """The layers of ``layers`` that rotate: a band of chunks is a band of frequencies, which
    a NoPE layer (every chunk at frequency 0) does not have, so it is never ablated; refused in
    one line when none is left."""
    out = [layer for layer in layers if lm.rope.rotates(layer)]
    if not out:
        raise InputError(
            f"layers {_span(list(layers))} of {lm.name} do not rotate (NoPE): there is no band of "
            "frequencies to ablate; choose rotating layers with --layers"
        )
    return out


def configs_from_options(lm: LoadedModel, layers: Sequence[int], options: dict) -> list[Ablation]:
    """CLI options -> configurations (one ``--band``, or a ``--sweep``), over the rotating
    layers among ``layers`` (NoPE layers have no frequency band)."""
    kind = options.get("ablation") or "rotation-free"
    if kind not in ABLATIONS:
        raise InputError(f"unknown --ablation {kind!r}; choose from {', '.join(ABLATIONS)}")
    layers = rotating_layers(lm, layers)
    head = check_head(lm, options.get("head"))
    heads = None if head is None else (head,)
    spare = bool(options.get("spare_bos"))
    n_chunks = common_chunks(lm, layers)
    sweep = options.get("sweep")
    configs = []
    if sweep not in (None, "", "none"):
        points = read_option(options, "sweep_points", 8, int)  # 0 is refused, never "8"
        configs += sweep_configs(kind, sweep, n_chunks, layers, heads, points, spare)
    band = parse_band(options.get("band"), n_chunks)
    if band is not None and band[0] == band[1]:
        raise InputError(
            f"band {options.get('band')!r} is empty (LO:HI with HI exclusive): it would ablate "
            "nothing; give HI > LO, e.g. 0:8"
        )
    if band is not None:
        configs.append(Ablation(kind, band[0], band[1], tuple(layers), heads, spare_first=spare))
    if not configs:
        raise InputError("the ablation analysis needs --band LO:HI or --sweep low|high|both")
    return configs


def analyze(
    lm: LoadedModel,
    make_batches,
    layers: Sequence[int],
    options: dict,
    progress: bool = True,
    total: int | None = None,
) -> pd.DataFrame:
    """Pipeline entry point: ``--layers`` are the ablated layers (heads are scored in all)."""
    configs = configs_from_options(lm, layers, options)
    cache = PassCache.from_options(options)
    df = run_ablations(lm, make_batches, configs, total=total, progress=progress, cache=cache)
    if cache is not None:
        cache.clear()
    return df


def loss_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: band, loss and delta loss."""
    cols = [
        "ablation",
        "sweep",
        "band_lo",
        "band_hi",
        "band_fraction",
        "ablated_layers",
        "ablated_heads",
        "spare_first",
        "loss",
        "delta_loss",
        "n_targets",
    ]
    return df.drop_duplicates(cols)[cols].reset_index(drop=True)


def summarize(df: pd.DataFrame) -> str:
    """Delta loss per configuration and what happens to the baseline's positional heads."""
    positional = df.base_class.isin(["diagonal", "previous-token"])
    lines = [
        f"{df.model.iloc[0]}: baseline loss {df.base_loss.iloc[0]:.4f} nats/token over "
        f"{int(df.n_targets.iloc[0]):,} targets"
    ]
    lines.append(
        "ablation       sweep band      layers heads  delta loss  positional heads: "
        "mean d_diag / d_prev"
    )
    for _, sub in df[df.ablation != "none"].groupby(
        [
            "ablation",
            "sweep",
            "band_lo",
            "band_hi",
            "ablated_layers",
            "ablated_heads",
            "spare_first",
        ],
        sort=False,
    ):
        r = sub.iloc[0]
        pos = sub[positional.loc[sub.index]]
        dd = f"{pos.d_diag_score.mean():+.3f} / {pos.d_prev_score.mean():+.3f}" if len(pos) else "-"
        lines.append(
            f"{r.ablation:<14} {r.sweep or '-':<5} {r.band_lo:>3}:{r.band_hi:<5} "
            f"{r.ablated_layers:>6} {r.ablated_heads:>5} {r.delta_loss:>+11.4f}  {dd}"
            + (" (BOS spared)" if r.spare_first else "")
        )
    return "\n".join(lines)
