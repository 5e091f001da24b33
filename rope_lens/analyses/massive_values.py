"""Massive values: concentrated very large q/k dims, which chunks they sit in, and what they
are for (Jin et al., ICML 2025, *Massive Values in Self-Attention Modules are the Key to
Contextual Knowledge Understanding*).

**Detection**, per (layer, kind, head, dim), over every counted token t of the corpus, on the
vectors that are rotated (the QK-normed ones where the model has QK-norm; values too, for
comparison: Jin et al. find massive values in q and k but not in v):

- ``jin`` (their criterion, as we read §3 of the paper): M_d = ||x_{:, d}||_2, the L2 norm of
  dim d over the tokens, and dim d is massive when M_d > λ · mean_{d'} M_{d'} over the head's
  dims, λ = 5 (their value; ``--massive-lambda``). Summed over a corpus the norm is
  sqrt(Σ_t x_{t,d}²); the ratio to the mean is the same as for one long sequence.
- ``token`` (relative to the mean, per token): |x_{t,d}| > λ · mean_{d'} |x_{t,d'}| on a given
  token; the dim is massive when this holds on at least half the counted tokens (the values
  are *concentrated in the same dims* across tokens, not a few spikes).

Each dim belongs to a frequency chunk (rotate-half: chunk k = dims k and k + d/2), so the
table reports the chunk, its frequency, its third of the spectrum (``band``) and whether it is
``critical`` (wavelength > trained context: ``rope_lens.analyses.critical``).

**Disruption** (their §4 experiment, at inference): the massive q/k dims of the analysed
layers are replaced by their corpus mean (pre-rotation, then rotated as usual: only the
content they carry is removed), and the same number of non-massive dims, drawn at random in
the same (layer, kind, head), is replaced likewise as a control. Measured: the next-token loss
on the corpus and a contextual-retrieval probe (passkey retrieval at ``--probe-len`` tokens,
``passkey.make_prompts``).

Mechanics of the edit: on the post-rotation q/k (what a native attention kernel receives), a
chunk is unrotated, the edited dims set to the mean, and rotated back
(``replace_dims_rotated``); ``dim_edits`` plugs it into the engine: a tap inside the attention
call on the native backend, replacement hooks at the post-rotation q/k points on ``tl``. With both dims of a chunk edited this equals the ablation
module's ``mean`` band edit; it also edits single dims, which chunk bands cannot.

One table: ``record == "dim"`` rows (detection) and ``record == "disruption"`` rows
(``condition`` baseline / massive / control); ``dims_table`` and ``disruption_table`` split it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, SupportsInt, cast

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from rope_lens.analyses import critical, passkey
from rope_lens.analyses.ablation import LossMeter
from rope_lens.analyses.band_norms import band_of
from rope_lens.analyses.registry import read_option
from rope_lens.errors import InputError
from rope_lens.extract import Site, hook_name, run_batches, stream
from rope_lens.inputs import Batch
from rope_lens.models.load import LoadedModel
from rope_lens.resume import resumable
from rope_lens.rope import RopeSpec, chunk_dims, rotate, unrotate

LAMBDA = 5.0  # Jin et al.'s threshold
TOKEN_SHARE = 0.5  # the per-token criterion must hold on at least this share of tokens
CONDITIONS = ("baseline", "massive", "control")
DIM_COLUMNS = [
    "layer",
    "layer_type",
    "kind",
    "head",
    "kv_head",
    "dim",
    "chunk",
    "frequency",
    "wavelength",
    "band",
    "l2_norm",
    "ratio_to_mean",
    "token_fraction",
    "max_abs",
    "massive",
    "massive_token",
    "critical",
]
DISRUPT_COLUMNS = [
    "condition",
    "n_dims_edited",
    "loss",
    "delta_loss",
    "n_targets",
    "probe_accuracy",
    "n_probe",
    "probe_len",
]
COLUMNS = ["model", "record", *DIM_COLUMNS, *DISRUPT_COLUMNS, "lambda", "n_tokens"]


class MassiveReducer:
    """Streaming per-(layer, kind, head, dim) sums: x² (Jin's norm), x (means for the
    disruption), the per-token criterion count and max |x|. O(layers x heads x d_head)."""

    def __init__(self, lm: LoadedModel, layers: Sequence[int], lam: float = LAMBDA) -> None:
        self.lm, self.lam = lm, lam
        self.sites: Sequence[Site] = [
            Site(layer, kind, "pre") for layer in layers for kind in ("q", "k", "v")
        ]
        self.acc: dict[Site, dict[str, Tensor]] = {}
        self.n = 0

    def update(self, site: Site, x: Float[Tensor, "batch pos head d_head"], batch: Batch) -> None:
        w = batch.count_mask.to(x.dtype)[:, :, None, None]
        ax = x.abs()
        over = (ax > self.lam * ax.mean(-1, keepdim=True)).to(x.dtype)
        new = {
            "sumsq": (x.square() * w).sum((0, 1)).double(),
            "sum": (x * w).sum((0, 1)).double(),
            "over": (over * w).sum((0, 1)).double(),
            "max": (ax * w).amax((0, 1)).double(),
        }
        if site not in self.acc:
            self.acc[site] = new
        else:
            a = self.acc[site]
            for key in ("sumsq", "sum", "over"):
                a[key] += new[key]
            a["max"] = torch.maximum(a["max"], new["max"])
        if site == self.sites[0]:
            self.n += batch.n_counted

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Partial sums and the token count, for a resume checkpoint (``rope_lens.resume``)."""
        tensors = {
            f"{s.layer}/{s.kind}/{key}": t for s, a in self.acc.items() for key, t in a.items()
        }
        return tensors, {"n": self.n}

    def load_state(self, tensors: dict[str, Tensor], extra: dict[str, Any]) -> None:
        for name, t in tensors.items():
            layer, kind, key = name.split("/")
            site = Site(int(layer), kind, "pre")
            self.acc.setdefault(site, {})[key] = t.to(self.lm.device)
        self.n = int(extra["n"])

    def means(self) -> dict[Site, Float[Tensor, "head d_head"]]:
        """Pre-rotation mean of every q/k dim over counted tokens."""
        return {s: (a["sum"] / max(self.n, 1)).float() for s, a in self.acc.items()}

    def to_frame(self) -> pd.DataFrame:
        lm = self.lm
        frames = []
        for site, a in self.acc.items():
            group = lm.group(site.layer)  # Gemma 4's full layers have their own
            spec = lm.rope.layer_specs[site.layer]
            l2 = a["sumsq"].sqrt().cpu().numpy()  # (head, d_head)
            heads, dims = l2.shape
            ratio = l2 / np.maximum(l2.mean(-1, keepdims=True), 1e-30)
            frac = (a["over"] / max(self.n, 1)).cpu().numpy()
            chunk_of = dim_chunks(spec)
            freq = spec.frequencies().numpy()
            wave = spec.wavelengths().numpy()
            rotating = [float(f) for f in freq if f > 0]
            bands = np.array([band_of(float(f), rotating) for f in freq], dtype=object)
            h = np.repeat(np.arange(heads), dims)
            d = np.tile(np.arange(dims), heads)
            c = chunk_of[d]
            frames.append(
                pd.DataFrame(
                    {
                        "layer": site.layer,
                        "layer_type": lm.rope.layer_types[site.layer],
                        "kind": site.kind,
                        "head": h,
                        "kv_head": h // group if site.kind == "q" else h,
                        "dim": d,
                        "chunk": c,
                        "frequency": freq[c],
                        "wavelength": wave[c],
                        "band": bands[c],
                        "l2_norm": l2.reshape(-1) / np.sqrt(max(self.n, 1)),
                        "ratio_to_mean": ratio.reshape(-1),
                        "token_fraction": frac.reshape(-1),
                        "max_abs": a["max"].cpu().numpy().reshape(-1),
                        "massive": ratio.reshape(-1) > self.lam,
                        "massive_token": frac.reshape(-1) >= TOKEN_SHARE,
                    }
                )
            )
        df = pd.concat(frames, ignore_index=True)
        df.insert(0, "model", lm.name)
        df.insert(1, "record", "dim")
        df["lambda"] = self.lam
        df["n_tokens"] = self.n
        return df.sort_values(["layer", "kind", "head", "dim"], ignore_index=True)


def dim_chunks(spec: RopeSpec) -> np.ndarray:
    """Chunk index of every dim of a head."""
    pairs = chunk_dims(spec.head_dim, spec.rotary_dim, spec.pairing)
    out = np.empty(spec.head_dim, dtype=int)
    for chunk, (a, b) in enumerate(pairs.tolist()):
        out[a] = out[b] = chunk
    return out


def replace_dims_rotated(
    x_rot: Float[Tensor, "batch pos head d_head"],
    positions: Tensor,
    spec: RopeSpec,
    mask: Tensor,
    values: Float[Tensor, "head d_head"],
) -> Float[Tensor, "batch pos head d_head"]:
    """Post-rotation vectors whose *pre-rotation* dims ``mask`` ([head, d_head] bool) are set to
    ``values``: unrotate, replace, rotate back (exact up to fp rounding)."""
    pre = unrotate(x_rot.double(), positions, spec)
    pre = torch.where(mask.to(pre.device), values.to(pre.device, pre.dtype), pre)
    return rotate(pre, positions, spec).to(x_rot.dtype)


class DimEditTap:
    """Native backend: set the pre-rotation ``masks`` dims of q / k to ``values`` inside the
    attention call, before the model's own kernel runs."""

    needs_stats = False

    def __init__(self, masks: dict[Site, Tensor], values: dict[Site, Tensor]) -> None:
        self.edits = {s: (m, values[s]) for s, m in masks.items() if bool(m.any())}
        self.layers = sorted({s.layer for s in self.edits})

    def edit(self, call) -> None:
        for kind in ("q", "k"):
            site = Site(call.layer, kind, "pre")
            if site not in self.edits:
                continue
            mask, value = self.edits[site]
            x = call.bphd(kind, "rot")
            new = replace_dims_rotated(x, call.batch.positions, call.spec, mask, value)
            new = new.transpose(1, 2).to(call.query.dtype)  # back to [batch, head, pos, d]
            if kind == "q":
                call.query = new
            else:
                call.key = new
        call._cache.clear()

    def observe(self, call) -> None:
        pass


def dim_edits(lm: LoadedModel, masks: dict[Site, Tensor], values: dict[Site, Tensor]) -> list:
    """What sets the pre-rotation ``masks`` dims ([head, d_head] bool per q/k ``Site(layer,
    kind, "pre")``) to ``values`` on ``lm``'s backend: one native tap, or TransformerLens
    replacement hooks at the post-rotation q/k points. Pass the result to :func:`plug`."""
    masks = {s: m for s, m in masks.items() if bool(m.any())}
    if not masks:
        return []
    if backend(lm) == "native":
        return [DimEditTap(masks, values)]
    from rope_lens.extract import heads_of, to_bphd

    hooks = []
    for site, mask in masks.items():
        name = hook_name(lm, Site(site.layer, site.kind, "rot"))
        spec = lm.rope.layer_specs[site.layer]

        def fn(
            x: Tensor,
            batch: Batch,
            mask=mask,
            value=values[site],
            spec=spec,
            name=name,
            kind=site.kind,
            layer=site.layer,
        ) -> Tensor:
            view = to_bphd(name, x, heads_of(lm, kind, layer))
            edited = replace_dims_rotated(view, batch.positions, spec, mask, value)
            return edited.reshape(x.shape) if x.dim() == 3 else edited

        hooks.append((name, fn))
    return hooks


def backend(lm: LoadedModel) -> str:
    return getattr(lm, "backend", "tl")


def plug(lm: LoadedModel, edits: Sequence) -> dict:
    """``run_batches`` keyword for edits from :func:`dim_edits` or ``ablation_hooks``."""
    return {"taps": list(edits)} if backend(lm) == "native" else {"hooks": list(edits)}


def select_dims(
    dims: pd.DataFrame, criterion: str = "massive", seed: int = 0
) -> tuple[dict[tuple[int, str], np.ndarray], dict[tuple[int, str], np.ndarray]]:
    """Masks ``[head, d_head]`` per (layer, kind) of q/k: the massive dims, and a control of
    as many non-massive dims drawn at random in the same (layer, kind, head)."""
    rng = np.random.default_rng(seed)
    massive, control = {}, {}
    qk = dims[dims.kind.isin(["q", "k"])]
    for (layer, kind), sub in qk.groupby(["layer", "kind"]):
        heads, d_head = int(sub["head"].max()) + 1, int(sub.dim.max()) + 1
        m = np.zeros((heads, d_head), bool)
        c = np.zeros((heads, d_head), bool)
        for head, hs in sub.groupby("head"):
            hit = hs[hs[criterion]].dim.to_numpy()
            rest = hs[~hs[criterion]].dim.to_numpy()
            m[head, hit] = True
            c[head, rng.choice(rest, size=min(len(hit), len(rest)), replace=False)] = True
        massive[(layer, kind)], control[(layer, kind)] = m, c
    return massive, control


def _masks(lm, chosen, means) -> tuple[dict[Site, Tensor], dict[Site, Tensor]]:
    masks, values = {}, {}
    for (layer, kind), m in chosen.items():
        site = Site(layer, kind, "pre")
        masks[site] = torch.from_numpy(m)
        values[site] = means[site]
    return masks, values


def disrupt(
    lm: LoadedModel,
    make_batches,
    dims: pd.DataFrame,
    means: dict[Site, Tensor],
    criterion: str = "massive",
    probe_n: int = 8,
    probe_len: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Loss and passkey accuracy with the massive q/k dims (and a random control of equal
    size) mean-replaced; one row per condition."""
    massive, control = select_dims(dims, criterion, seed)
    prompts = (
        passkey.make_prompts(lm.tokenizer, lm.bos_token_id, probe_len, probe_n, seed)
        if probe_n > 0
        else []
    )
    rows = []
    base_loss = None
    for condition, chosen in (("baseline", {}), ("massive", massive), ("control", control)):
        masks, values = _masks(lm, chosen, means)
        edits = dim_edits(lm, masks, values)
        meter = LossMeter()
        run_batches(
            lm,
            make_batches(),
            on_logits=meter,
            progress=progress,
            desc=condition,
            **plug(lm, edits),
        )
        meter.require_targets("massive-values")
        acc = passkey.accuracy(lm, prompts, edits) if prompts else float("nan")
        base_loss = meter.loss if base_loss is None else base_loss
        rows.append(
            {
                "condition": condition,
                "n_dims_edited": int(sum(int(m.sum()) for m in chosen.values())),
                "loss": meter.loss,
                "delta_loss": meter.loss - base_loss,
                "n_targets": meter.n,
                "probe_accuracy": acc,
                "n_probe": len(prompts),
                "probe_len": probe_len,
            }
        )
    return pd.DataFrame(rows)


def run(
    lm: LoadedModel,
    make_batches,
    layers: Sequence[int],
    lam: float = LAMBDA,
    disruption: bool = True,
    criterion: str = "massive",
    probe_n: int = 8,
    probe_len: int = 256,
    seed: int = 0,
    total: int | None = None,
    progress: bool = True,
    options: dict | None = None,
) -> pd.DataFrame:
    """Detection over ``make_batches()``, then (optionally) the disruption passes
    (``options``: the pipeline's; the detection pass resumes from its checkpoint)."""
    if not lam > 0:
        raise InputError(f"--massive-lambda must be positive, got {lam}")
    if criterion not in ("massive", "massive_token"):
        raise InputError(f"unknown criterion {criterion!r}; choose massive or massive_token")
    reducer = MassiveReducer(lm, layers, lam)
    skip, after_batch, finished = resumable(options or {}, [reducer])
    stream(
        lm,
        make_batches(),
        [reducer],
        total=total,
        progress=progress,
        skip=skip,
        after_batch=after_batch,
    )
    finished()
    dims = critical.mark_critical(reducer.to_frame(), critical.run(lm, layers))
    if not disruption:
        return dims.reindex(columns=COLUMNS)
    result = disrupt(
        lm, make_batches, dims, reducer.means(), criterion, probe_n, probe_len, seed, progress
    )
    result.insert(0, "model", lm.name)
    result.insert(1, "record", "disruption")
    result["lambda"] = lam
    result["n_tokens"] = reducer.n
    return pd.concat([dims, result], ignore_index=True).reindex(columns=COLUMNS)


def analyze(
    lm: LoadedModel,
    make_batches,
    layers: Sequence[int],
    options: dict,
    progress: bool = True,
    total: int | None = None,
) -> pd.DataFrame:
    """Pipeline entry point. Options (all optional): ``massive_lambda`` (5), ``no_disrupt``,
    ``massive_criterion`` (massive | massive_token), ``probe_n`` (8), ``probe_len`` (256),
    ``seed`` (0)."""

    def opt(name, default, cast):
        return read_option(options, name, default, cast)

    probe_n = opt("probe_n", 8, int)
    probe_len = opt("probe_len", 256, int)
    if probe_n < 0 or probe_len < 16:
        raise InputError("--probe-n must be >= 0 and --probe-len >= 16")
    return run(
        lm,
        make_batches,
        layers,
        lam=opt("massive_lambda", LAMBDA, float),
        disruption=not options.get("no_disrupt"),
        criterion=opt("massive_criterion", "massive", str),
        probe_n=probe_n,
        probe_len=probe_len,
        seed=opt("seed", 0, int),
        total=total,
        progress=progress,
        options=options,
    )


def dims_table(df: pd.DataFrame) -> pd.DataFrame:
    """The detection rows, with their integer columns back to integers."""
    out = df[df.record == "dim"].dropna(axis=1, how="all").reset_index(drop=True)
    ints = ["layer", "head", "kv_head", "dim", "chunk", "n_tokens"]
    return out.astype({c: int for c in ints if c in out})


def disruption_table(df: pd.DataFrame) -> pd.DataFrame:
    cols = ["model", *DISRUPT_COLUMNS, "lambda", "n_tokens"]
    return df[df.record == "disruption"][cols].reset_index(drop=True)


def chunk_table(df: pd.DataFrame, criterion: str = "massive") -> pd.DataFrame:
    """Per (kind, chunk): how many (layer, head) pairs have a massive dim in that chunk."""
    dims = dims_table(df)
    hit = dims[dims[criterion]]
    per = hit.groupby(["kind", "layer", "head", "chunk"]).size().reset_index(name="n_dims")
    out = per.groupby(["kind", "chunk"]).agg(n_heads=("n_dims", "size"), n_dims=("n_dims", "sum"))
    first = dims.groupby("chunk")[["frequency", "wavelength", "band"]].first()
    return out.reset_index().join(first, on="chunk")


def summarize(df: pd.DataFrame) -> str:
    """Massive dims per kind and band (both criteria), the top chunks, and the disruption."""
    dims = dims_table(df)
    lam = float(df["lambda"].iloc[0])
    lines = [
        f"{df.model.iloc[0]}: massive dims (L2 over {int(df.n_tokens.iloc[0]):,} tokens > "
        f"{lam:g} x head mean; per-token criterion on >= {TOKEN_SHARE:.0%} of tokens)"
    ]
    for kind in ("q", "k", "v"):
        sub = dims[dims.kind == kind]
        if sub.empty:
            continue
        cells = []
        for crit, label in (("massive", "jin"), ("massive_token", "token")):
            hit = sub[sub[crit]]
            by_band = hit.band.value_counts()
            bands = ", ".join(
                f"{b} {int(by_band.get(b, 0))}"
                for b in ("high", "middle", "low", "none")
                if by_band.get(b, 0)
            )
            cells.append(f"{label} {len(hit)}/{len(sub)}" + (f" ({bands})" if bands else ""))
        top = sub[sub.massive].chunk.value_counts().head(4)
        tops = ", ".join(f"{int(c)}x{int(n)}" for c, n in top.items()) or "-"
        crit = ""
        if "critical" in sub and sub.massive.any():
            crit = (
                f"; in critical chunks {sub[sub.massive].critical.mean():.0%} "
                f"(of all dims {sub.critical.mean():.0%})"
            )
        lines.append(
            f"  {kind}: " + "; ".join(cells) + f"; top chunks (chunk x dims): {tops}" + crit
        )
    dis = disruption_table(df)
    if len(dis):
        for r in dis.itertuples():
            lines.append(
                f"  {r.condition:<8} {int(cast(SupportsInt, r.n_dims_edited)):>5} dims: "
                f"loss {r.loss:.4f} ({r.delta_loss:+.4f}), "
                f"passkey@{int(cast(SupportsInt, r.probe_len))} {r.probe_accuracy:.0%} "
                f"of {int(cast(SupportsInt, r.n_probe))}"
            )
    return "\n".join(lines)
