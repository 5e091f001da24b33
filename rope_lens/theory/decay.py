"""Does RoPE make attention decay with distance? Figs 2, 8 and 9 as tidy DataFrames.

Each curve is ``a(r) = q_r^T R^{-r} k_r / norm`` for r = 0..max_distance with one of three
query/key models:

- ``"constant"``: q = k = all-ones (Su et al.; Fig 2a). Per chunk this is 2 cos(r g_k), so the
  curve is (2/d) sum_k cos(r g_k) with the 1/d normalisation.
- ``"gaussian"``: a fresh q, k ~ N(0, I) for every distance (Fig 2b, confirmed in App. B.4).
- ``"constant_gaussian"``: one q and one k ~ N(0, I), repeated (Fig 9).

The paper does not state d or the normalisation (Fig 2, §3). The 1/d option makes the
constant curve start at exactly 1; for large d it approaches the d -> infinity limit
``int_0^1 cos(r theta^-x) dx`` computed by :func:`decay_limit`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from rope_lens.rope import RopeSpec
from rope_lens.theory.kernel import encoding_spec, relative_logits

QKModel = Literal["constant", "gaussian", "constant_gaussian"]
Normalisation = Literal["d", "sqrt_d", "cosine", "none"]


def activation_curve(
    model: QKModel,
    offsets: Float[Tensor, " pos"] | Int[Tensor, " pos"],
    spec: RopeSpec,
    normalisation: Normalisation = "d",
    seed: int = 0,
) -> Float[Tensor, " pos"]:
    """Activation ``a(r)`` at each relative offset for one query/key model.

    Args:
        model: how q and k are drawn (see the module docstring).
        offsets: relative distance of each point (need not be consecutive: Random RoPE).
        spec: frequencies; ``spec.head_dim`` is d.
        normalisation: divide by d, sqrt(d), ``|q||k|`` (cosine) or nothing.
        seed: seed of the Gaussian draws (same seed, same draws, whatever the spec).

    Returns:
        One activation per offset, fp64.
    """
    n, d = offsets.shape[0], spec.head_dim
    gen = torch.Generator().manual_seed(seed)
    if model == "constant":
        q = k = torch.ones(1, d, dtype=torch.float64)
    elif model == "constant_gaussian":
        q, k = torch.randn(2, 1, d, generator=gen, dtype=torch.float64)
    else:
        q, k = torch.randn(2, n, d, generator=gen, dtype=torch.float64)
    raw = relative_logits(q, k, offsets, spec)  # (pos,)
    if normalisation == "d":
        return raw / d
    if normalisation == "sqrt_d":
        return raw / math.sqrt(d)
    if normalisation == "cosine":
        return raw / (q.norm(dim=-1) * k.norm(dim=-1))
    return raw


def decay_limit(distance: Float[Tensor, " pos"], theta: float = 10_000.0) -> Float[Tensor, " pos"]:
    """The d -> infinity limit of the all-ones curve, ``int_0^1 cos(r theta^-x) dx``.

    Substituting u = r theta^-x gives ``(Ci(r) - Ci(r/theta)) / ln(theta)``; we evaluate
    ``Ci(b) - Ci(a) = ln(b/a) + F(b) - F(a)`` with ``F(x) = int_0^x (cos t - 1)/t dt``, whose
    integrand is smooth, by one cumulative trapezoid on a fine grid.
    """
    r = distance.to(torch.float64)
    top = max(float(r.max()), 1.0)
    step = 0.01
    grid = torch.arange(0.0, top + 2 * step, step, dtype=torch.float64)
    safe = grid.clamp_min(1e-300)
    integrand = torch.where(grid > 0, (torch.cos(grid) - 1) / safe, torch.zeros_like(grid))
    cumulative = torch.cat(
        [torch.zeros(1, dtype=torch.float64), torch.cumsum((integrand[1:] + integrand[:-1]) / 2, 0)]
    )
    cumulative = cumulative * step

    def f(x: Tensor) -> Tensor:  # linear interpolation of F on the grid
        pos = x / step
        lo = pos.floor().long().clamp(max=len(grid) - 2)
        frac = pos - lo
        return cumulative[lo] * (1 - frac) + cumulative[lo + 1] * frac

    log_theta = math.log(theta)
    value = (log_theta + f(r) - f(r / theta)) / log_theta  # ln(r / (r/theta)) = ln(theta)
    return torch.where(r > 0, value, torch.ones_like(r))


def decay_frame(
    models: Sequence[QKModel] = ("constant", "gaussian"),
    d_heads: Sequence[int] = (64, 512),
    theta: float = 10_000.0,
    max_distance: int = 5000,
    normalisation: Normalisation = "d",
    with_limit: bool = True,
    seed: int = 0,
) -> pd.DataFrame:
    """Fig 2: activation vs relative distance for each q/k model and head dimension.

    Returns:
        Columns ``model, curve, d_head, theta, normalisation, distance, activation``. With
        ``with_limit`` the constant model also gets a ``"d→∞"`` curve (``d_head`` 0).
    """
    distance = torch.arange(max_distance + 1)
    rows = []
    for model in models:
        for d in d_heads:
            spec = encoding_spec("rope", d, theta)
            act = activation_curve(model, distance, spec, normalisation, seed)
            rows.append(_frame(act, distance, model=model, curve=f"d={d}", d_head=d))
        if with_limit and model == "constant":
            act = decay_limit(distance.double(), theta)
            rows.append(_frame(act, distance, model=model, curve="d→∞", d_head=0))
    out = pd.concat(rows, ignore_index=True)
    return out.assign(theta=float(theta), normalisation=normalisation)


def random_rope_frame(
    max_positions: Sequence[int] = (10_000, 20_000, 50_000),
    n_positions: int = 5000,
    models: Sequence[QKModel] = ("constant", "gaussian"),
    d_head: int = 512,
    theta: float = 10_000.0,
    normalisation: Normalisation = "d",
    seed: int = 0,
) -> pd.DataFrame:
    """Fig 8: RoPE vs Random RoPE (Ruoss et al. 2023).

    Random RoPE samples ``n_positions`` positions without replacement from 1..L, sorts them and
    uses them as positions; the x axis is the index r in the sequence (what Fig 8 plots, INFERRED
    from "larger L decays faster") and the rotation distance is ``pos[r] - pos[0]``.

    Returns:
        Columns ``model, curve, max_position, index, distance, activation`` (``max_position``
        is 0 for plain RoPE, whose distance equals the index).
    """
    spec = encoding_spec("rope", d_head, theta)
    index = torch.arange(n_positions)
    gen = torch.Generator().manual_seed(seed + 1)
    layouts = [("RoPE", 0, index)]
    for L in max_positions:
        pos = torch.sort(torch.randperm(L, generator=gen)[:n_positions] + 1).values
        label = f"{L // 1000}k" if L % 1000 == 0 else str(L)
        layouts.append((f"Random RoPE L={label}", L, pos - pos[0]))
    rows = []
    for model in models:
        for curve, L, offsets in layouts:
            # Same seed for every layout: the curves differ only in their positions.
            act = activation_curve(model, offsets, spec, normalisation, seed)
            frame = _frame(act, index, model=model, curve=curve, max_position=L)
            rows.append(
                frame.rename(columns={"distance": "index"}).assign(distance=offsets.numpy())
            )
    return pd.concat(rows, ignore_index=True).assign(d_head=d_head, theta=float(theta))


def constant_gaussian_frame(
    thetas: Sequence[float] = (10_000.0, 500_000.0),
    d_head: int = 64,
    max_distance: int = 5000,
    normalisation: Normalisation = "d",
    seed: int = 0,
) -> pd.DataFrame:
    """Fig 9: one Gaussian q and one Gaussian k repeated, for each base wavelength.

    Returns:
        Columns ``model, curve, theta, d_head, distance, activation``.
    """
    distance = torch.arange(max_distance + 1)
    rows = []
    for theta in thetas:
        spec = encoding_spec("rope", d_head, float(theta))
        act = activation_curve("constant_gaussian", distance, spec, normalisation, seed)
        curve = f"θ={theta / 1000:g}k"
        rows.append(_frame(act, distance, model="constant_gaussian", curve=curve, theta=theta))
    return pd.concat(rows, ignore_index=True).assign(d_head=d_head, normalisation=normalisation)


def _frame(act: Tensor, distance: Tensor, **labels: object) -> pd.DataFrame:
    return pd.DataFrame(
        {**labels, "distance": distance.numpy(), "activation": act.numpy()},
        index=range(len(distance)),
    )
