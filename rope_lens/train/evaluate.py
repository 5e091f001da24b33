"""Validation perplexity at the training length and at multiples of it (length generalisation).

Every length sees the *same* validation tokens: the first ``eval_tokens`` of a split's stream
cut into sequences of L, 2L or 4L tokens. Only the context available to each prediction
changes, so the numbers are comparable across lengths. Loss is the mean next-token NLL over all
predicted tokens; perplexity is its exponential.

The LM head runs on chunks of positions: at Gemma 2B's 256k vocabulary, fp32 logits of one
4x-length sequence (32k tokens) would take ~34 GB at once.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor

from rope_lens.train.data import pack


@torch.no_grad()
def sequence_nll(
    model: Any, batch: Int[Tensor, "batch pos"], chunk_tokens: int = 8192
) -> tuple[Tensor, int]:
    """Summed next-token NLL (fp32) and the number of predicted tokens of ``batch``.

    Args:
        model: an unwrapped HF causal LM with ``.model`` (the decoder) and ``.lm_head``.
        batch: token ids.
        chunk_tokens: positions per LM-head chunk (bounds the fp32 logits' memory).
    """
    hidden = model.model(input_ids=batch).last_hidden_state[:, :-1]  # (batch, pos - 1, d_model)
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets = batch[:, 1:].reshape(-1)
    nll = torch.zeros((), dtype=torch.float32, device=batch.device)
    for start in range(0, len(targets), chunk_tokens):
        logits = model.lm_head(hidden[start : start + chunk_tokens]).float()  # (chunk, vocab)
        nll += F.cross_entropy(logits, targets[start : start + chunk_tokens], reduction="sum")
    return nll, targets.numel()


def _full_params(model: Any) -> Any:
    """Under FSDP, gather the full weights for evaluation (the unwrapped modules need them)."""
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    if isinstance(model, FSDP):
        return FSDP.summon_full_params(model, writeback=False)
    return contextlib.nullcontext()


@torch.no_grad()
def perplexity(
    model: Any,
    stream: Int[Tensor, " token"],
    seq_len: int,
    n_tokens: int,
    *,
    micro_batch_tokens: int,
    accelerator: Any | None = None,
) -> dict[str, float]:
    """Loss and perplexity of ``model`` on the first ``n_tokens`` of ``stream``.

    Args:
        model: an HF causal LM, possibly wrapped by accelerate (DDP, FSDP).
        stream: a split's packed token stream.
        seq_len: evaluation sequence length.
        n_tokens: token budget (rounded down to whole sequences, and to what exists).
        micro_batch_tokens: tokens per forward pass (batch = this // seq_len, at least 1).
        accelerator: shards sequences over processes and sums across them when given.
    """
    seqs = pack(stream[: max(n_tokens, seq_len)], seq_len)  # (n, seq_len)
    if len(seqs) == 0:  # split shorter than one sequence of this length
        return {"loss": math.nan, "ppl": math.nan, "tokens": 0, "seq_len": seq_len}
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    device = accelerator.device if accelerator else next(model.parameters()).device
    mine = seqs[rank::world]
    per = max(1, micro_batch_tokens // seq_len)
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (nll sum, token count)
    was_training = model.training
    model.eval()
    base = accelerator.unwrap_model(model) if accelerator else model
    autocast = accelerator.autocast() if accelerator else torch.autocast("cpu", enabled=False)
    with _full_params(model), autocast:
        for start in range(0, len(mine), per):
            batch = mine[start : start + per].to(device=device, dtype=torch.long)
            nll, count = sequence_nll(base, batch)
            total[0] += nll.double()
            total[1] += count
    if accelerator and world > 1:
        total = accelerator.reduce(total, reduction="sum")
    model.train(was_training)
    loss = (total[0] / total[1].clamp_min(1)).item()
    return {
        "loss": loss,
        "ppl": math.exp(min(loss, 50.0)),
        "tokens": int(total[1].item()),
        "seq_len": seq_len,
    }


def evaluate_splits(
    model: Any,
    streams: dict[str, Int[Tensor, " token"]],
    seq_len: int,
    n_tokens: int,
    multiples: tuple[int, ...],
    *,
    micro_batch_tokens: int,
    splits: tuple[str, ...] = ("valid", "heldout"),
    accelerator: Any | None = None,
) -> dict[str, dict[str, float]]:
    """``{f"{split}@{k}x": {loss, ppl, tokens, seq_len}}`` for each split and length multiple."""
    out = {}
    # The same tokens at every length: round the budget to whole sequences of the longest one.
    longest = seq_len * max(multiples)
    n_tokens = max(longest, n_tokens // longest * longest)
    for split in splits:
        if split not in streams or streams[split].numel() < 2:
            continue
        # ...and to what the split holds, so a short split is not cut differently per length.
        usable = min(n_tokens, streams[split].numel() // longest * longest)
        for k in multiples:
            out[f"{split}@{k}x"] = perplexity(
                model,
                streams[split],
                seq_len * k,
                usable,
                micro_batch_tokens=micro_batch_tokens,
                accelerator=accelerator,
            )
    return out
