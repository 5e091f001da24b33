"""Read a rotation from head vectors seen at shifted positions (pure math, no model access).

A relative-position model computes the same pre-rotation vector for a token whatever its
absolute position, so when every position of a text is shifted by ``s`` the vector the
attention kernel receives changes only by RoPE's own rotation: each 2-D chunk (a, b) turns by
``s * g`` (``a' = a cos - b sin``, ``b' = a sin + b cos``). From the vectors ``X0`` (shift 0) and
``Xs`` (shift s) of many tokens and heads this module reads, without knowing the architecture:

- which dims move at all (none: the layer does not rotate, NoPE);
- which dim each moving dim is paired with, by a least-squares fit of a 2-D rotation to every
  pair of dims at once (``O(d^2)`` from two Gram matrices), and that the pairs form one of the
  layouts ``rope_lens.rope.chunk_dims`` describes (rotate-half or interleaved, over the first
  ``rotary_dim`` dims), turning the usual way or, all of them, the other way (nanochat's
  rotation is clockwise);
- each chunk's angle ``s * g`` at every shift, unwrapped from the smallest shift to the
  largest (several shifts, each at most 16 times the last, so no turn is miscounted), which
  gives ``g`` to ``sigma / s_max``.

Anything else (a norm that changes with the position, dims that move but fit no rotation, angles
not proportional to the shift) raises :class:`NotARotation` with one line saying what was seen.

Tolerances are relative to the vectors' own size and come from the caller (the model dtype's
machine epsilon: ``rope_lens.engine.probe``), so the same reading works in fp32, bf16 and fp16.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from rope_lens.types import Pairing

# The model computes angles as fp32 position * frequency: at position p an angle of up to p rad
# is off by about p * 2^-24 (tolerated on top of the vectors' own noise at each shift).
ANGLE_EPS = 2.0**-24


def shift_tol(tol: float, shift: int, positions: int) -> float:
    """The noise level at ``shift``: the vectors' own plus fp32 angle rounding there."""
    return tol + ANGLE_EPS * (shift + positions)


class NotARotation(ValueError):
    """The vectors change with the position, but not by a rotation of dim pairs."""


@dataclass(frozen=True)
class Rotation:
    """A layer's rotation as read from its vectors.

    Attributes:
        pairing, rotary_dim: the layout (``rope_lens.rope.chunk_dims``); ``rotary_dim`` is the
            smallest that holds every chunk seen turning.
        clockwise: every chunk turns from its second dim towards its first.
        freq: rad/token of every chunk of that layout (``head_dim // 2``, fp64), as estimated
            (a chunk that does not turn reads about 0, within its sigma).
        sigma: each frequency's standard error (rad/token); inf for a chunk that is zero in
            every vector (its frequency cannot be seen, and matters to no logit).
        residual: the worst relative residual of the rotation fit (0 for an exact rotation),
            each shift's scaled by tol / shift_tol (the fp32 angle rounding discounted).
        alternatives: other layouts the moving dims fit equally (only when very few chunks
            turn, e.g. one): the caller may prefer one of them (the config's).
    """

    pairing: Pairing
    rotary_dim: int
    freq: Float[Tensor, " chunk"]
    sigma: Float[Tensor, " chunk"]
    residual: float
    clockwise: bool = False
    alternatives: tuple[tuple[Pairing, int], ...] = ()

    @property
    def rotating(self) -> Tensor:
        """Chunks seen turning: frequency more than 5 sigma above 0."""
        return self.freq > 5 * self.sigma + 1e-12

    def turning_freq(self) -> Tensor:
        """The frequencies, 0 for every chunk not seen turning."""
        return torch.where(self.rotating, self.freq, torch.zeros_like(self.freq))


def read_rotation(
    base: Float[Tensor, "sample d_head"],
    shifted: Mapping[int, Float[Tensor, "sample d_head"]],
    tol: float,
    prefer: Pairing | None = None,
    independent: int | None = None,
) -> Rotation | None:
    """The rotation taking ``base`` to ``shifted[s]`` for every shift ``s`` (> 0), or None when
    no dim moves (NoPE). ``tol``: the relative noise level of the vectors; ``independent``:
    how many samples carry independent noise (the number of distinct positions: rounding of
    the model's own angles is shared by every head and text at one position)."""
    from rope_lens.rope import chunk_dims

    x0 = base.double()
    shifts = sorted(s for s in shifted if s > 0)
    if not shifts:
        raise ValueError("read_rotation needs at least one positive shift")
    xs = {s: shifted[s].double() for s in shifts}
    d = x0.shape[-1]
    scale = float(x0.pow(2).mean().sqrt()) or 1.0
    n = x0.shape[0]

    n0 = torch.linalg.vector_norm(x0, dim=-1).clamp_min(1e-30)
    span = independent or 0
    for s in shifts:
        ratio = torch.linalg.vector_norm(xs[s], dim=-1) / n0
        worst = float((ratio - 1).abs()[n0 > 0.1 * scale].max())
        if worst > 10 * tol:
            raise NotARotation(
                f"the length of its head vectors changes when every position moves by {s} "
                f"(by up to {worst:.1%}): a position-dependent scale, or an absolute position "
                "embedding, not a rotation"
            )
    move = torch.stack(
        [(xs[s] - x0).pow(2).sum(0).sqrt() / (math.sqrt(n) * scale) for s in shifts]
    ).amax(0)  # (d,)
    if float(move.max()) <= 10 * tol:
        return None
    clockwise, alternatives = _pairs_and_layouts(x0, xs, shifts, move, tol, span)
    pairing, rotary_dim = alternatives[0]
    if prefer is not None:
        preferred = [a for a in alternatives if a[0] == prefer]
        if preferred:
            pairing, rotary_dim = preferred[0]
    idx = chunk_dims(d, rotary_dim, pairing)
    if clockwise:
        idx = idx.flip(-1)
    u0 = torch.complex(x0[:, idx[:, 0]], x0[:, idx[:, 1]])  # (sample, chunk)
    energy = u0.abs().pow(2).sum(0).clamp_min(1e-300)
    angle, sigma_angle, residual = {}, {}, 0.0
    for s in shifts:
        us = torch.complex(xs[s][:, idx[:, 0]], xs[s][:, idx[:, 1]])
        z = (u0.conj() * us).sum(0) / energy
        err = (us - z * u0).abs().pow(2).sum(0)
        fit = float(err.sum().sqrt() / (math.sqrt(n * d) * scale))
        residual = max(residual, fit * tol / shift_tol(tol, s, span))  # in units of tol
        angle[s] = torch.angle(z)
        samples = max((independent or n) - 1, 1)
        # Averaging beats random noise down, not rounding: a turn smaller than about half a
        # rounding can round back to the very same number (bf16 does so for slow chunks), so
        # no angle is known better than that.
        sigma_angle[s] = ((err / energy / samples).sqrt() / z.abs().clamp_min(1e-30)).clamp_min(
            tol / 2
        )
    if residual > 10 * tol:
        raise NotARotation(
            f"its dims move with the position but do not rotate in {pairing} pairs "
            f"(fit residual {residual:.1%}): e.g. a norm with per-dim weights after RoPE"
        )
    # A chunk that is (numerically) zero in every vector, e.g. behind a QK-norm weight of 0,
    # has no angle to see: its frequency is unknown (sigma inf), and it adds nothing to any
    # logit; a candidate's frequency for it is accepted as it is.
    hidden = energy <= tol**2 * float(energy.mean())
    for s in shifts:
        sigma_angle[s] = torch.where(hidden, torch.inf, sigma_angle[s])
        angle[s] = torch.where(hidden, torch.zeros_like(angle[s]), angle[s])
    freq, sigma = _unwrap(angle, sigma_angle, shifts)
    turning = freq > 5 * sigma + 1e-12
    if bool((freq < -5 * sigma - 1e-12).any()):
        raise NotARotation("some of its chunks turn one way and some the other")
    if pairing == "interleaved" and bool(turning.any()):
        # Interleaved chunks beyond the rotary dims are paired the same way: the smallest
        # rotary_dim that holds every turning chunk describes the same layout.
        rotary_dim = max(rotary_dim, 2 * (int(torch.nonzero(turning)[-1, 0]) + 1))
    return Rotation(
        pairing=pairing,
        rotary_dim=rotary_dim,
        freq=freq,
        sigma=sigma,
        residual=residual,
        clockwise=clockwise,
        alternatives=tuple(a for a in alternatives if a[0] != pairing),
    )


def _pairs_and_layouts(
    x0: Tensor, xs: Mapping[int, Tensor], shifts: list[int], move: Tensor, tol: float, span: int
) -> tuple[bool, list[tuple[Pairing, int]]]:
    """Whether the clearly moving dims' pairs all turn clockwise, and the layouts they fit."""
    d = x0.shape[-1]
    g = x0.pow(2).sum(0)
    worst = torch.zeros(d, d, dtype=x0.dtype)
    orient = torch.zeros(d, d, dtype=x0.dtype)
    for s in shifts:
        c = x0.T @ xs[s]  # c[a, b] = sum x0_a xs_b
        e = xs[s].pow(2).sum(0)
        re = c.diagonal()[:, None] + c.diagonal()[None, :]
        im = c - c.T  # for the ordered pair (a, b): sum x0_a xs_b - x0_b xs_a
        den = (g[:, None] + g[None, :]).clamp_min(1e-300)
        fit = ((e[:, None] + e[None, :]) - (re.pow(2) + im.pow(2)) / den).clamp_min(0)
        rel = (fit / (e[:, None] + e[None, :]).clamp_min(1e-300)).sqrt()
        worst = torch.maximum(worst, rel * tol / shift_tol(tol, s, span))
        # Orientation from the smallest shift where the pair's angle is clearly visible (it
        # has not wrapped past pi there: each shift is at most 16 times the last).
        # A pair whose angle stays below that everywhere is oriented by the largest shift
        # (its angle is small at every shift, so it cannot have wrapped).
        visible = ((im / den).abs() > 20 * tol) | (s == shifts[-1])
        orient = torch.where((orient == 0) & visible, torch.sign(im), orient)
    worst.fill_diagonal_(float("inf"))
    clear = torch.nonzero(move > 20 * tol).flatten().tolist() or [int(move.argmax())]
    pairs: set[tuple[int, int]] = set()
    for a in clear:
        b = int(worst[a].argmin())
        if int(worst[b].argmin()) != a or float(worst[a, b]) > 10 * tol:
            raise NotARotation(
                f"dim {a} of its head vectors moves with the position but turns with no "
                "other dim as a 2-D rotation"
            )
        first, second = (a, b) if float(orient[a, b]) >= 0 else (b, a)
        pairs.add((first, second))
    turns = {first < second for first, second in pairs}
    if len(turns) > 1:
        raise NotARotation("some of its dim pairs turn one way and some the other")
    clockwise = turns == {False}
    pairs = {(min(p), max(p)) for p in pairs}
    layouts: list[tuple[Pairing, int]] = []
    gaps = {b - a for a, b in pairs}
    if len(gaps) == 1:
        half = gaps.pop()
        if half > 0 and all(a < half for a, _ in pairs) and 2 * half <= d:
            layouts.append(("half", 2 * half))
    if all(a % 2 == 0 and b == a + 1 for a, b in pairs):
        layouts.append(("interleaved", 2 * (max(a for a, _ in pairs) // 2 + 1)))
    if not layouts:
        shown = ", ".join(f"({a}, {b})" for a, b in sorted(pairs)[:4])
        raise NotARotation(
            f"it rotates dim pairs {shown}..., which are neither rotate-half nor interleaved "
            "pairs of its leading dims"
        )
    return clockwise, layouts


def _unwrap(
    angle: Mapping[int, Tensor], sigma: Mapping[int, Tensor], shifts: list[int]
) -> tuple[Tensor, Tensor]:
    """rad/token of each chunk from its angle at every shift: start at the smallest shift and
    add the whole turns the previous estimate predicts at each larger one."""
    first = shifts[0]
    freq = angle[first] / first
    err = sigma[first] / first
    for s in shifts[1:]:
        predicted = freq * s
        turns = torch.round((predicted - angle[s]) / (2 * math.pi))
        unwrapped = angle[s] + 2 * math.pi * turns
        gap = (unwrapped - predicted).abs()
        if bool((gap > 6 * (err * s + sigma[s]) + 1e-9).any()):
            chunk = int((gap - 6 * (err * s + sigma[s])).argmax())
            raise NotARotation(
                f"chunk {chunk} turns by angles not proportional to the shift (shift {s}): "
                "its frequency changes with the position"
            )
        freq = unwrapped / s
        err = sigma[s] / s
    return freq, err
