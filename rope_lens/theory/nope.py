"""Proposition 5.2: a single NoPE head cannot be diagonal or previous-token.

On the sequence [x_bos, x, x] the third token's query scores both copies of x identically
(a_{3,3} = a_{3,2}, same key vector, no position), so

    alpha_{3,3} = alpha_{3,2} = 1 / (2 + exp(a_{3,1} - a_{3,3})) < 1/2

for *any* W_Q, W_K and embeddings. We test "any" two ways: many random weight draws over a wide
range of scales, and gradient ascent that tries as hard as it can to push alpha past 1/2. The
same code with a RoPE frequency set is the control: there position breaks the tie.
Positions are 1-based in column names, as in the paper (alpha_3_3 = the token attending itself).

In floating point alpha_{3,3} rounds to exactly 0.5 once exp(a_{3,1} - a_{3,3}) < 2^-52, so we
also report the margin ``1/2 - alpha_{3,3} = (alpha_{3,1} + alpha_{3,2} - alpha_{3,3}) / 2`` (an
identity, since the three sum to 1), with ``alpha_{3,2} - alpha_{3,3}`` computed as
``alpha_{3,3} expm1(a_{3,2} - a_{3,3})`` so nothing cancels. It stays representable, and
strictly positive for NoPE, while a_{3,1} - a_{3,3} > -700; the weight scales below keep the
logits well inside that.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from rope_lens.rope import RopeSpec
from rope_lens.theory.constructions import HeadKind
from rope_lens.theory.kernel import relative_rotation


def bos_x_x_rotations(spec: RopeSpec) -> Float[Tensor, "key_pos d_head d_head"]:
    """``R^{-r}`` for the keys at positions 0, 1, 2 seen from the query at position 2."""
    return torch.stack([relative_rotation(spec, 2 - j) for j in range(3)])


def bos_x_x_logits(
    w_q: Float[Tensor, "batch d_head d_model"],
    w_k: Float[Tensor, "batch d_head d_model"],
    x_bos: Float[Tensor, "batch d_model"],
    x: Float[Tensor, "batch d_model"],
    rotations: Float[Tensor, "key_pos d_head d_head"],
) -> Float[Tensor, "batch key_pos"]:
    """Logits ``(a_{3,1}, a_{3,2}, a_{3,3})`` of the third token of [x_bos, x, x], one head each.

    Args:
        w_q: query weights of each head.
        w_k: key weights of each head.
        x_bos: BOS embedding.
        x: the repeated token's embedding.
        rotations: from :func:`bos_x_x_rotations` (identity matrices for NoPE).

    Returns:
        Logits with the usual 1/sqrt(d_head) scale (the bound does not depend on it).
    """
    seq = torch.stack([x_bos, x, x], dim=1)  # (batch, key_pos, d_model)
    q = torch.einsum("bhm,bm->bh", w_q, x)  # the third token's query, (batch, d_head)
    k = torch.einsum("bhm,bpm->bph", w_k, seq)  # (batch, key_pos, d_head)
    logits = torch.einsum("bh,phe,bpe->bp", q, rotations, k)
    return logits / math.sqrt(rotations.shape[-1])


def _margins(logits: Tensor) -> tuple[Tensor, Tensor]:
    """1/2 - alpha_{3,2} and 1/2 - alpha_{3,3}, without cancelling against 1/2."""
    a1, a2, a3 = torch.softmax(logits, dim=-1).unbind(-1)
    l2, l3 = logits[..., 1], logits[..., 2]
    return (a1 + a2 * torch.expm1(l3 - l2)) / 2, (a1 + a3 * torch.expm1(l2 - l3)) / 2


def random_weight_search(
    spec: RopeSpec,
    n_draws: int = 2000,
    d_model: int = 16,
    log10_scale: tuple[float, float] = (-1.0, 0.5),
    seed: int = 0,
) -> pd.DataFrame:
    """Prop 5.2 over random heads: Gaussian W_Q, W_K, x_bos, x; W_Q gets a log-uniform scale.

    Args:
        spec: the head's frequency set (``spec.head_dim`` is d_head).
        n_draws: number of random heads.
        d_model: embedding size.
        log10_scale: range of the per-draw scale of W_Q, so logits span ~0.1 to ~100s
            (saturated softmax, yet no underflow of the margin in fp64).
        seed: seed of the draws.

    Returns:
        One row per draw: ``encoding, draw, scale, logit_3_j, alpha_3_j`` (j = 1, 2, 3),
        ``margin_3_2, margin_3_3`` (1/2 minus alpha) and ``identity_gap = |a_{3,3} - a_{3,2}|``.
    """
    gen = torch.Generator().manual_seed(seed)
    d = spec.head_dim
    lo, hi = log10_scale
    scale = 10 ** (lo + (hi - lo) * torch.rand(n_draws, generator=gen, dtype=torch.float64))
    w_q, w_k = torch.randn(2, n_draws, d, d_model, generator=gen, dtype=torch.float64)
    x_bos, x = torch.randn(2, n_draws, d_model, generator=gen, dtype=torch.float64)
    logits = bos_x_x_logits(w_q * scale[:, None, None], w_k, x_bos, x, bos_x_x_rotations(spec))
    alpha = torch.softmax(logits, dim=-1)
    margin_2, margin_3 = _margins(logits)
    frame = pd.DataFrame({"encoding": spec.rope_type, "draw": range(n_draws), "scale": scale})
    for j in range(3):
        frame[f"logit_3_{j + 1}"] = logits[:, j].numpy()
        frame[f"alpha_3_{j + 1}"] = alpha[:, j].numpy()
    frame["margin_3_2"] = margin_2.numpy()
    frame["margin_3_3"] = margin_3.numpy()
    frame["identity_gap"] = (logits[:, 2] - logits[:, 1]).abs().numpy()
    return frame


def adversarial_search(
    spec: RopeSpec,
    target: HeadKind = "diagonal",
    steps: int = 300,
    restarts: int = 8,
    d_model: int = 8,
    lr: float = 0.05,
    max_norm: float = 4.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Gradient ascent on log alpha_{3,3} (diagonal) or log alpha_{3,2} (previous token).

    Every parameter is free: W_Q, W_K and both embeddings, from ``restarts`` random starts,
    projected after each step onto the ball of Frobenius norm ``max_norm`` (per restart). The
    bound holds for any weights; the ball only keeps the NoPE margin representable in fp64 and
    gives RoPE the same budget.

    Returns:
        Columns ``encoding, target, step, alpha, margin`` for the restart with the best alpha
        at each step (``margin`` = 1/2 - alpha as in the module docstring). For NoPE alpha
        creeps up to, never past, 1/2; with RoPE it heads to 1.
    """
    gen = torch.Generator().manual_seed(seed)
    d = spec.head_dim
    rotations = bos_x_x_rotations(spec)

    def init(*shape: int) -> Tensor:
        return (0.3 * torch.randn(*shape, generator=gen, dtype=torch.float64)).requires_grad_()

    params = [init(restarts, d, d_model), init(restarts, d, d_model)]
    params += [init(restarts, d_model), init(restarts, d_model)]
    # Plain Adam written out: torch.optim's first step costs seconds of lazy imports.
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    beta1, beta2 = 0.9, 0.999
    column = 2 if target == "diagonal" else 1
    rows = []
    for step in range(steps + 1):
        w_q, w_k, x_bos, x = params
        logits = bos_x_x_logits(w_q, w_k, x_bos, x, rotations)
        log_alpha = torch.log_softmax(logits, dim=-1)
        with torch.no_grad():
            alpha = log_alpha.exp()
            best = int(alpha[:, column].argmax())
            margin = _margins(logits)[column - 1][best]
            rows.append(
                {"step": step, "alpha": float(alpha[best, column]), "margin": float(margin)}
            )
        if step == steps:
            break
        grads = torch.autograd.grad(log_alpha[:, column].sum(), params)
        with torch.no_grad():
            for p, g, (m, v) in zip(params, grads, moments):
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                m_hat = m / (1 - beta1 ** (step + 1))
                v_hat = v / (1 - beta2 ** (step + 1))
                p += lr * m_hat / (v_hat.sqrt() + 1e-8)  # ascent
                norm = p.flatten(1).norm(dim=1).clamp_min(max_norm) / max_norm
                p /= norm.view(-1, *[1] * (p.dim() - 1))
    return pd.DataFrame(rows).assign(encoding=spec.rope_type, target=target)
