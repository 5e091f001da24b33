"""Attention arithmetic for the analyses, without a ``[T, T]`` tensor where the math allows.

The positional head scores need, per query row i, the row's log-sum-exp; the attention's
spread (entropy, mean distance) needs two attention-weighted sums as well (of the scores and
of the key positions):

    lse_i = log sum_j exp(s_ij),   sum_j a_ij s_ij = s q_i . sum_j a_ij k_j,   sum_j a_ij j,

with a_ij = exp(s_ij - lse_i); any single weight a_ij is then exp(s_ij - lse_i) from one dot
product.

A fused attention kernel returns the log-sum-exp beside its output, and the two sums when
handed ``value = [k, j]``: its output is the weighted sum of the values.
``attention_stats`` uses ``aten._scaled_dot_product_flash_attention_for_cpu`` on CPU and the
memory-efficient kernel on CUDA (both O(T) memory), and falls back to query blocks (memory
O(block x keys)) for soft-capped scores and for sliding windows shorter than the sequence,
which those kernels cannot express. Every path is checked against an explicit softmax in the
tests.

Visibility is causal, optionally within a sliding window (``i - j < window``) and within
chunks (``i // chunk == j // chunk``: Llama 4's chunked attention). Learned sink logits (gpt-oss,
one per head, passed to the attention interface as ``s_aux``) join every row's softmax as one
extra logit that belongs to no key: the log-sum-exp includes them, so each key's weight is
``exp(s_ij - lse_i)`` as the model computes it, and the keys' weights sum to
``key_mass = 1 - a_sink < 1``.

Queries and keys are handed over post-rotation, ``[batch, head, pos, d_head]``; keys and
values may keep fewer heads (GQA), and are repeated only where a kernel needs it; positions are slot indices 0..T-1 (right padding,
so a counted query never sees a padded key under the causal mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

# Query rows per block in the blockwise fallback: memory is BLOCK x keys per (batch, head).
BLOCK = 256


@dataclass
class AttentionStats:
    """Per query row i, each ``[batch, head, pos]``: ``lse`` = log of the row's softmax
    denominator (sum_j exp(s_ij), plus exp(sink) with a learned sink) and, when the caller
    asked for the attention's spread, ``score_mean`` = sum_j a_ij s_ij and ``pos_mean`` =
    sum_j a_ij j over the keys (the entropy over the keys is key_mass * lse - score_mean, the
    mean distance key_mass * i - pos_mean); else those two are None. ``key_mass`` =
    sum_j a_ij, the keys' share of the row (None: 1, no sink logit)."""

    lse: Float[Tensor, "batch head pos"]
    score_mean: Float[Tensor, "batch head pos"] | None = None
    pos_mean: Float[Tensor, "batch head pos"] | None = None
    key_mass: Float[Tensor, "batch head pos"] | None = None


def allowed(
    query_pos: Tensor, key_pos: Tensor, window: int | None, chunk: int | None = None
) -> Tensor:
    """Causal (sliding-window, chunked) visibility of ``key_pos`` from ``query_pos``
    (broadcast): key j is visible from query i when j <= i and, with a window w, i - j < w,
    and, with chunks of c, i // c == j // c."""
    ok = key_pos <= query_pos
    if window is not None:
        ok = ok & (query_pos - key_pos < window)
    if chunk is not None:
        ok = ok & (torch.div(query_pos, chunk, rounding_mode="floor") == key_pos // chunk)
    return ok


def visibility_of(visible: Tensor) -> tuple[int | None, int | None] | None:
    """(window, chunk) whose :func:`allowed` pattern is exactly ``visible`` (``[n, n]`` bool,
    one row's real tokens as the model's own mask has them), or None when no such pair
    exists (a pattern the analyses do not model). A window or chunk the ``n`` tokens do not
    reach reads as None: it masks nothing here."""
    n = visible.shape[-1]
    pos = torch.arange(n, device=visible.device)
    if n == 0 or not bool(visible[pos, pos].all()):
        return None
    chunk = None
    blocked = ~visible[pos[1:], pos[:-1]]  # query i cannot see key i - 1
    if bool(blocked.any()):
        chunk = int(torch.nonzero(blocked)[0, 0]) + 1
    distance = (pos[:, None] - pos[None, :]).masked_fill(~visible, -1)
    reach = int(distance.max()) + 1
    for window in (None, reach):
        if torch.equal(allowed(pos[:, None], pos[None, :], window, chunk), visible):
            return (window if window is not None and window < n else None), chunk
    return None


def visible_offset(
    n: int, offset: int, window: int | None, chunk: int | None, device=None
) -> Tensor:
    """``[n]`` bool: whether query i sees key i - offset (False where i < offset)."""
    pos = torch.arange(n, device=device)
    return (pos >= offset) & allowed(pos, pos - offset, window, chunk)


def visible_first(n: int, window: int | None, chunk: int | None, device=None) -> Tensor:
    """``[n]`` bool: whether query i sees key 0."""
    pos = torch.arange(n, device=device)
    return allowed(pos, torch.zeros_like(pos), window, chunk)


def scores_of(
    q: Float[Tensor, "batch head qpos d_head"],
    k: Float[Tensor, "batch head kpos d_head"],
    scale: float,
    softcap: float | None,
) -> Float[Tensor, "batch head qpos kpos"]:
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    if softcap:
        s = torch.tanh(s / softcap) * softcap
    return s


def explicit_scores(
    q: Float[Tensor, "batch head pos d_head"],
    k: Float[Tensor, "batch head pos d_head"],
    scale: float,
    softcap: float | None = None,
    window: int | None = None,
    chunk: int | None = None,
) -> Float[Tensor, "batch head pos pos"]:
    """Full pre-softmax scores with -inf where the causal / window / chunk mask hides a key
    (small inputs only: per-prompt views such as the decomposition)."""
    n = q.shape[-2]
    pos = torch.arange(n, device=q.device)
    s = scores_of(q, k, scale, softcap)
    return s.masked_fill(~allowed(pos[:, None], pos[None, :], window, chunk), float("-inf"))


def softmax_with_sinks(
    s: Float[Tensor, "batch head qpos kpos"], sinks: Float[Tensor, " head"] | None
) -> Float[Tensor, "batch head qpos kpos"]:
    """Attention weights of the keys from scores ``s``; a learned sink logit per head joins
    each row's denominator (its own weight is dropped, as the model drops it)."""
    if sinks is None:
        return torch.softmax(s, dim=-1)
    extra = sinks.to(s)[None, :, None, None].expand(*s.shape[:-1], 1)
    return torch.softmax(torch.cat([s, extra], dim=-1), dim=-1)[..., :-1]


def _with_sinks(lse: Tensor, sinks: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """The row's log-denominator with each head's sink logit added, and the keys' share."""
    if sinks is None:
        return lse, None
    total = torch.logaddexp(lse, sinks.to(lse)[None, :, None])
    return total, torch.exp(lse - total)


def attention_stats(
    q: Float[Tensor, "batch head pos d_head"],
    k: Float[Tensor, "batch kv_head pos d_head"],
    scale: float,
    softcap: float | None = None,
    window: int | None = None,
    force_blockwise: bool = False,
    value: Float[Tensor, "batch kv_head pos d_value"] | None = None,
    spread: bool = True,
    chunk: int | None = None,
    sinks: Float[Tensor, " head"] | None = None,
) -> tuple[AttentionStats, Tensor | None]:
    """Log-sum-exp (and with ``spread`` the attention-weighted score / position sums) of every
    query row, fp32, and, when ``value`` is given and a fused kernel ran, the attention output
    sum_j a_ij v_j ``[batch, head, pos, d_value]`` of the same call (else None: run the
    model's kernel). Keys and values may have fewer heads than queries (GQA): query head h
    reads kv head h // (head / kv_head), as transformers' ``repeat_kv`` orders them.

    Without ``spread`` the kernel is the model's own attention, unchanged: its log-sum-exp
    comes free with the output, so positional scores cost one dot product per score and row.
    With ``spread`` the value is ``[v, k, j, 0...]`` and q, k get zero columns to the same
    width (the CPU and flash kernels want equal head sizes; zeros leave the scores unchanged),
    so the softmax is still computed once, over a wider value: about a second attention's
    worth of work. ``force_blockwise`` takes the fallback path (tests compare the two).

    The spread path computes in fp32 (its output is fp32); without the spread the kernel runs
    in the inputs' dtype, as the model's own would, and the log-sum-exp is fp32 either way.

    A learned sink logit per head (``sinks``) is folded in after the kernel: the fused
    kernels' softmax covers the keys only, so their output and sums are multiplied by the
    keys' share ``exp(lse_keys - lse)``."""
    if value is not None:  # an editor may have given every query head its own key
        value = per_query_head(value, k.shape[1])
    n, d = q.shape[-2], q.shape[-1]
    fused_ok = (
        not softcap
        and (window is None or n <= window)
        and (chunk is None or n <= chunk)
        and not force_blockwise
    )
    if fused_ok and q.device.type in ("cpu", "cuda"):
        if not spread:
            # A value of k's width stands in when the caller needs no output (kernels want
            # equal head sizes; its output is dropped).
            fused_value = value if value is not None and value.shape[-1] == d else None
            out, lse = _fused(q, k, k if fused_value is None else fused_value, scale)
            if out is not None:
                total, mass = _with_sinks(lse[..., :n].float(), sinks)
                stats = AttentionStats(total, key_mass=mass)
                if fused_value is None:
                    return stats, None
                return stats, (out if mass is None else (out * mass[..., None]).to(out.dtype))
        else:
            q, k = q.float(), k.float()
            value = None if value is None else value.float()
            dv = 0 if value is None else value.shape[-1]
            width = dv + d + 1
            if q.device.type == "cuda":
                width += (-width) % 8  # the memory-efficient kernel's alignment
            packed = torch.zeros(*k.shape[:-1], width, device=k.device, dtype=k.dtype)
            if value is not None:
                packed[..., :dv] = value
            packed[..., dv : dv + d] = k
            packed[..., dv + d] = torch.arange(n, device=q.device, dtype=q.dtype)
            qp = torch.nn.functional.pad(q, (0, width - d))
            kp = torch.nn.functional.pad(k, (0, width - d))
            out, lse = _fused(qp, kp, packed, scale)
            if out is not None:
                total, mass = _with_sinks(lse[..., :n], sinks)
                if mass is not None:
                    out = out * mass[..., None]
                # sum_j a_ij s_ij = scale * q_i . (sum_j a_ij k_j): linear in k without a cap.
                score_mean = (q * out[..., dv : dv + d]).sum(-1) * scale
                stats = AttentionStats(total, score_mean, out[..., dv + d], mass)
                return stats, (out[..., :dv] if value is not None else None)
    q, k = q.float(), per_query_head(k.float(), q.shape[1])
    return _blockwise(q, k, scale, softcap, window, chunk, sinks), None


def per_query_head(x: Tensor, n_heads: int) -> Tensor:
    """``x`` ``[batch, kv_head, ...]`` repeated to ``n_heads`` heads in ``repeat_kv`` order."""
    group = n_heads // x.shape[1]
    return x.repeat_interleave(group, dim=1) if group > 1 else x


def _fused(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor | None, Tensor]:
    """(output, lse) from a fused causal kernel, or (None, _) when none is available here."""
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, is_causal=True, scale=scale
        )
        return out, lse
    # The CPU flash kernel reads GQA keys / values as they are; CUDA's need them repeated.
    k, v = per_query_head(k, q.shape[1]), per_query_head(v, q.shape[1])
    if q.dtype in (torch.float16, torch.bfloat16):
        try:  # what sdpa itself picks for half precision on CUDA; returns the log-sum-exp
            res = torch.ops.aten._scaled_dot_product_flash_attention(
                q, k, v, 0.0, True, False, scale=scale
            )
            return res[0], res[1]
        except RuntimeError:  # no flash for this GPU / head size: the efficient kernel
            pass
    try:  # the memory-efficient kernel takes fp32 too, and returns the log-sum-exp
        res = torch.ops.aten._scaled_dot_product_efficient_attention(
            q, k, v, None, True, 0.0, True, scale=scale
        )
        return res[0], res[1]
    except RuntimeError:  # unsupported shape / dtype on this GPU: the blockwise path
        return None, q.new_empty(0)


def _blockwise(
    q: Tensor,
    k: Tensor,
    scale: float,
    softcap: float | None,
    window: int | None,
    chunk: int | None = None,
    sinks: Tensor | None = None,
) -> AttentionStats:
    n = q.shape[-2]
    pos = torch.arange(n, device=q.device)
    lse = q.new_empty(*q.shape[:-1])
    score_mean = q.new_empty(*q.shape[:-1])
    pos_mean = q.new_empty(*q.shape[:-1])
    mass = q.new_empty(*q.shape[:-1]) if sinks is not None else None
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        first = 0 if window is None else max(0, start - window + 1)
        if chunk is not None:
            first = max(first, (start // chunk) * chunk)
        s = scores_of(q[..., start:stop, :], k[..., first:stop, :], scale, softcap)
        ok = allowed(pos[start:stop, None], pos[None, first:stop], window, chunk)
        s = s.masked_fill(~ok, float("-inf"))
        row_lse, _ = _with_sinks(torch.logsumexp(s, dim=-1), sinks)
        a = torch.exp(s - row_lse[..., None])
        lse[..., start:stop] = row_lse
        score_mean[..., start:stop] = (a * s.masked_fill(~ok, 0.0)).sum(-1)
        pos_mean[..., start:stop] = torch.matmul(a, pos[first:stop].to(a.dtype))
        if mass is not None:
            mass[..., start:stop] = a.sum(-1)
    return AttentionStats(lse, score_mean, pos_mean, mass)


def pair_scores(
    q: Float[Tensor, "batch head pos d_head"],
    k: Float[Tensor, "batch kv_head pos d_head"],
    offset: int,
    scale: float,
    softcap: float | None,
) -> Float[Tensor, "batch head pos"]:
    """s_{i, i - offset} for every query i >= offset (earlier rows are -inf), O(T) memory;
    ``offset`` >= 0; for the first key use :func:`first_key_scores`. ``k`` may have fewer
    heads than ``q`` (GQA): it is never repeated."""
    n = q.shape[-2]
    out = torch.full(q.shape[:-1], float("-inf"), device=q.device, dtype=q.dtype)
    out[..., offset:] = _grouped_dot(q[..., offset:, :], k[..., : n - offset, :]) * scale
    return _cap(out, softcap)


def first_key_scores(
    q: Float[Tensor, "batch head pos d_head"],
    k: Float[Tensor, "batch kv_head pos d_head"],
    scale: float,
    softcap: float | None,
) -> Float[Tensor, "batch head pos"]:
    """s_{i, 0} for every query i."""
    return _cap(_grouped_dot(q, k[..., :1, :]) * scale, softcap)


def _grouped_dot(
    q: Float[Tensor, "batch head pos d_head"], k: Float[Tensor, "batch kv_head kpos d_head"]
) -> Float[Tensor, "batch head pos"]:
    """q_i . k_i row by row (``k`` may have one row, then broadcast), query head h against kv
    head h // group, one group member at a time, so no repeated key is ever allocated."""
    b, h, n, d = q.shape
    group = h // k.shape[1]
    grouped = q.reshape(b, h // group, group, n, d)
    out = q.new_empty(b, h // group, group, n)
    for g in range(group):
        out[:, :, g] = torch.linalg.vecdot(grouped[:, :, g], k)
    return out.reshape(b, h, n)


def _cap(s: Tensor, softcap: float | None) -> Tensor:
    return torch.tanh(s / softcap) * softcap if softcap else s
