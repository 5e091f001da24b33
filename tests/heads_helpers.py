"""Builders for the head-analysis tests: tiny models with hand-set attention (the paper's
constructions) and NoPE copies. Each call builds a fresh model, so tests may mutate it."""

from __future__ import annotations

import math

import torch

from rope_lens import inputs
from rope_lens.models import load_model
from rope_lens.models.tiny import tiny_model_dir

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "To be, or not to be",
    "It's a truth universally acknowledged, that I'm here",
]


def make_batches(lm, texts=TEXTS, batch_size=2, window=64):
    """A ``make_batches`` callable over ``texts`` (right-padded, BOS prepended, not counted)."""
    seqs = inputs.tokenize(lm.tokenizer, texts, lm.bos_token_id, window)
    return lambda: inputs.batches(seqs, batch_size, lm.tokenizer.pad_token_id, True)


def fresh(arch, tmp_path, seed=0):
    """A newly built and loaded tiny model of ``arch`` (safe to mutate)."""
    return load_model(str(tiny_model_dir(arch, tmp_path / f"{arch}-{seed}", seed=seed)), "cpu")


def chunk_vector(head_dim: int, values: dict[int, tuple[float, float]]) -> torch.Tensor:
    """Head vector with the given 2-D chunks set (rotate-half layout: dims k and k + d/2)."""
    v = torch.zeros(head_dim)
    for c, (x, y) in values.items():
        v[c], v[c + head_dim // 2] = x, y
    return v


def rotate_once(v: torch.Tensor, freq: torch.Tensor) -> torch.Tensor:
    """R psi: every chunk turned by its own frequency (one token's rotation)."""
    half = len(v) // 2
    out = v.clone()
    for c in range(half):
        a = float(freq[c])
        x, y = float(v[c]), float(v[c + half])
        out[c], out[c + half] = x * math.cos(a) - y * math.sin(a), y * math.cos(a) + x * math.sin(a)
    return out


def planted_qwen2(tmp_path):
    """Tiny Qwen2 whose layer-0 heads are set by the paper's constructions (Thm 5.3):

    - head 0: q = k = psi (big norm in the three highest chunks) -> diagonal;
    - head 1: q reads only the lowest chunk, where only BOS's key is non-zero -> BOS sink;
    - head 2: q = psi, k = R psi (its own KV head) -> previous-token;
    - head 3: q = 0 -> uniform -> "other".

    The constant psi comes from the q/k biases (weights zeroed), so it is the same at every token.
    """
    lm = fresh("qwen2", tmp_path)
    attn = lm.hf_model.model.layers[0].self_attn
    emb = lm.hf_model.model.embed_tokens.weight
    hd, low = lm.head_dim, lm.head_dim // 2 - 1
    r = 14.0
    psi = chunk_vector(hd, {0: (r, 0.0), 1: (0.0, r), 2: (r, 0.0)})
    with torch.no_grad():
        attn.q_proj.weight.zero_()
        attn.k_proj.weight.zero_()
        q_bias, k_bias = torch.zeros(lm.n_heads, hd), torch.zeros(lm.n_kv_heads, hd)
        q_bias[0], k_bias[0] = psi, psi
        # Sink: residual dim 5 is non-zero only for BOS; KV head 0 copies it into the lowest chunk.
        emb[:, 5] = 0.0
        emb[lm.bos_token_id] = 0.0
        emb[lm.bos_token_id, 5] = 1.0
        attn.k_proj.weight[low, 5] = 1.0
        q_bias[1] = chunk_vector(hd, {low: (5.0, 0.0)})
        q_bias[2], k_bias[1] = psi, rotate_once(psi, lm.rope.layer_specs[0].frequencies())
        attn.q_proj.bias.copy_(q_bias.reshape(-1))
        attn.k_proj.bias.copy_(k_bias.reshape(-1))
    return lm


def make_nope(lm):
    """Turn ``lm`` into NoPE in place: zero its rotary inverse frequencies (cos 1, sin 0)."""
    # The bridge wraps HF's rotary module (``rotary_emb._original_component``): find the
    # buffers wherever they sit.
    for _, module in lm.hf_model.named_modules():
        for attr, buf in module._buffers.items():
            if attr.endswith("inv_freq") and buf is not None:
                buf.zero_()
    lm.reread_rope()  # the layout is read from the model's rotation, which just changed
    return lm
