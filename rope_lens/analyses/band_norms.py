"""Band norms: mean 2-norm of every frequency chunk of q, k and v, per layer and head.

The quantity behind the paper's Figs 3, 4, 10 and 13. By Cauchy-Schwarz,
|<q^(k), k^(k)>| <= ||q^(k)|| ||k^(k)||, so a chunk's norm bounds how much that frequency can
contribute to any attention logit. Rotation does not change chunk norms, so they are read from
the post-rotation vectors the attention call receives (no un-rotation needed) and reported in
the pre-rotation convention: divided by the layer's attention scaling, which YaRN / LongRoPE
fold into cos and sin (1 otherwise; the sidecar's ``rope`` block records it per layer type).
Where the model has QK-norm, the pre-rotation vector is the normed one. A test checks that
pre- and post-rotation stages give the same table.

Values are cut into the same 2-D chunks for comparison (Fig 13), although RoPE never rotates
them: their ``frequency`` column is the label of the matching q/k chunk.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from rope_lens.extract import KINDS, Site, stream
from rope_lens.inputs import Batch
from rope_lens.models.load import LoadedModel
from rope_lens.resume import Checkpointer
from rope_lens.rope import chunk_norms

COLUMNS = [
    "model",
    "layer",
    "layer_type",
    "head",
    "kv_head",
    "kind",
    "chunk",
    "frequency",
    "wavelength",
    "mean_norm",
    "n_tokens",
]


class BandNormReducer:
    """Streaming sum of chunk norms over counted tokens, per (layer, kind, head, chunk).

    Accumulates in fp64 on the model's device; memory is O(layers x heads x chunks) whatever
    the number of tokens.
    """

    def __init__(
        self,
        lm: LoadedModel,
        layers: Sequence[int],
        kinds: Sequence[str] = KINDS,
        stage: str = "rot",
    ) -> None:
        self.lm = lm
        self.sites: Sequence[Site] = [
            Site(layer, kind, "pre" if kind == "v" else stage) for layer in layers for kind in kinds
        ]
        self.sums: dict[Site, Tensor] = {}
        self.counts: dict[Site, int] = {}

    def update(self, site: Site, x: Float[Tensor, "batch pos head d_head"], batch: Batch) -> None:
        spec = self.lm.rope.layer_specs[site.layer]
        norms = chunk_norms(x, spec)  # (batch, pos, head, chunk)
        if site.stage == "rot" and site.kind != "v" and spec.attention_scaling != 1.0:
            norms = norms / spec.attention_scaling  # the pre-rotation convention
        weight = batch.count_mask.to(norms.dtype)[:, :, None, None]
        total = (norms * weight).sum(dim=(0, 1)).double()  # (head, chunk)
        if site in self.sums:
            self.sums[site] += total
        else:
            self.sums[site] = total
        self.counts[site] = self.counts.get(site, 0) + batch.n_counted

    def state(self) -> tuple[dict[str, Tensor], dict[str, int]]:
        """Accumulators as named tensors plus token counts (for checkpoints)."""
        key = lambda s: f"{s.layer}/{s.kind}/{s.stage}"  # noqa: E731
        return (
            {key(s): t for s, t in self.sums.items()},
            {key(s): n for s, n in self.counts.items()},
        )

    def load_state(self, tensors: dict[str, Tensor], counts: dict[str, int]) -> None:
        device = self.lm.device
        for site in self.sites:
            k = f"{site.layer}/{site.kind}/{site.stage}"
            if k in tensors:
                self.sums[site] = tensors[k].to(device)
                self.counts[site] = int(counts[k])

    def to_frame(self) -> pd.DataFrame:
        lm = self.lm
        frames = []
        for site, total in self.sums.items():
            group = lm.group(site.layer)
            n = self.counts[site]
            spec = lm.rope.layer_specs[site.layer]
            mean = (total / max(n, 1)).cpu().numpy()  # (head, chunk)
            heads, chunks = mean.shape
            head_idx = torch.arange(heads).repeat_interleave(chunks).numpy()
            chunk_idx = torch.arange(chunks).repeat(heads).numpy()
            frames.append(
                pd.DataFrame(
                    {
                        "model": lm.name,
                        "layer": site.layer,
                        "layer_type": lm.rope.layer_types[site.layer],
                        "head": head_idx,
                        "kv_head": head_idx // group if site.kind == "q" else head_idx,
                        "kind": site.kind,
                        "chunk": chunk_idx,
                        "frequency": spec.frequencies().numpy()[chunk_idx],
                        "wavelength": spec.wavelengths().numpy()[chunk_idx],
                        "mean_norm": mean.reshape(-1),
                        "n_tokens": n,
                    }
                )
            )
        df = pd.concat(frames, ignore_index=True)
        return df.sort_values(["layer", "kind", "head", "chunk"], ignore_index=True)[COLUMNS]


def run(
    lm: LoadedModel,
    batch_iter: Iterable[Batch],
    layers: Sequence[int],
    kinds: Sequence[str] = KINDS,
    total: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Band-norm table for ``layers`` over every counted token of ``batch_iter``."""
    reducer = BandNormReducer(lm, layers, kinds)
    stream(lm, batch_iter, [reducer], total=total, progress=progress)
    return reducer.to_frame()


def analyze(
    lm: LoadedModel,
    make_batches,
    layers: Sequence[int],
    options: dict,
    progress: bool = True,
    total: int | None = None,
) -> pd.DataFrame:
    """Pipeline entry point (see ``rope_lens.pipeline``); resumes from
    ``options["checkpoint"]`` when given (a partial run over the same inputs)."""
    reducer = BandNormReducer(lm, layers)
    ckpt = None
    skip = 0
    if options.get("checkpoint"):
        ckpt = Checkpointer(
            options["checkpoint"],
            options["inputs_sha256"],
            every_s=float(options.get("checkpoint_every_s", 60.0)),
        )
        restored = ckpt.load()
        if restored is not None:
            skip, tensors, counts = restored
            reducer.load_state(tensors, counts)

    def save(done: int) -> None:
        if ckpt is not None:
            tensors, counts = reducer.state()
            ckpt.maybe_save(done, tensors, counts)

    stream(
        lm, make_batches(), [reducer], total=total, progress=progress, skip=skip, after_batch=save
    )
    df = reducer.to_frame()
    if ckpt is not None:
        ckpt.clear()
    return df


def band_of(frequency: float, rotating: Sequence[float]) -> str:
    """'high' / 'middle' / 'low' third of the rotating frequencies ('none' if unrotated).

    By frequency rank, not chunk index: in reversed or partial p-RoPE models the unrotated
    chunks are not all at the end.
    """
    if frequency <= 0:
        return "none"
    ranked = sorted(rotating, reverse=True)
    rank = sum(f > frequency for f in ranked)
    return ("high", "middle", "low")[min(rank * 3 // max(len(ranked), 1), 2)]


def summarize(df: pd.DataFrame) -> str:
    """Per layer and kind (q, k): the chunk with the largest mean norm (averaged over heads),
    its frequency, wavelength and third of the rotating frequencies, in aligned columns."""
    qk = df[df.kind.isin(["q", "k"])]
    n_tokens = int(qk["n_tokens"].max()) if "n_tokens" in qk and len(qk) else 0
    model = str(df["model"].iloc[0]) if "model" in df and len(df) else "?"
    width = max([len("type"), *(len(str(t)) for t in qk["layer_type"].unique())])
    lines = [
        f"{model}: largest mean chunk norm per layer, over {n_tokens:,} tokens "
        "(chunk 0 = highest frequency; band = third of the rotating frequencies)",
        f"{'layer':>5}  {'type':<{width}}  {'kind':<4}  {'chunk':>5}  {'band':<6}  "
        f"{'rad/token':>9}  {'wavelength':>10}  {'mean norm':>9}",
    ]
    counts: dict[str, int] = dict.fromkeys(("high", "middle", "low", "none"), 0)
    for (layer, layer_type), sub in qk.groupby(["layer", "layer_type"]):
        ladder = sub.drop_duplicates("chunk").set_index("chunk")
        rotating = [float(f) for f in ladder["frequency"] if f > 0]
        for kind in ("q", "k"):
            per_chunk = sub[sub.kind == kind].groupby("chunk").mean_norm.mean()
            if per_chunk.empty:
                continue
            top = int(per_chunk.idxmax())
            freq = float(ladder.loc[top, "frequency"])
            wave = float(ladder.loc[top, "wavelength"])
            band = band_of(freq, rotating)
            counts[band] += 1
            lines.append(
                f"{layer:>5}  {layer_type:<{width}}  {kind:<4}  {top:>5}  {band:<6}  "
                f"{freq:>9.3g}  {wave:>10.4g}  {per_chunk.max():>9.3f}"
            )
    lines.append(
        "largest-norm chunks by band (q and k over layers): "
        + ", ".join(f"{b} {counts[b]}" for b in ("high", "middle", "low"))
        + (f", unrotated {counts['none']}" if counts["none"] else "")
    )
    return "\n".join(lines)
