"""Config-derived frequencies + our rotation reproduce each architecture's post-rotation hooks.

This is the test that catches the silent RoPE traps: wrong pairing convention, wrong theta or
scaling, QK-norm before rotation, GQA head counts.
"""

import dataclasses

import pytest
import torch

from rope_lens import rope
from rope_lens.extract import Site, capture
from tests.helpers import one_batch

TEXTS = ["It's a truth universally acknowledged, that a single man", "To be, or not to be"]
ARCHS = ["gemma", "llama3", "qwen2", "gemma3", "qwen3", "llama"]


def _pre_and_rot(lm):
    batch = one_batch(lm, TEXTS)
    sites = [
        Site(layer, kind, stage)
        for layer in range(lm.n_layers)
        for kind in "qk"
        for stage in ("pre", "rot")
    ]
    return batch, capture(lm, batch, sites)


@pytest.mark.parametrize("arch", ARCHS)
def test_rotating_pre_reproduces_post(tiny_tl, arch):
    """rotate(pre-rotation hook, positions, config spec) == post-rotation hook (fp32, 1e-5).
    On the TransformerLens backend, whose pre-rotation hooks are independent of our layout."""
    lm = tiny_tl(arch)
    batch, acts = _pre_and_rot(lm)
    for layer in range(lm.n_layers):
        spec = lm.rope.layer_specs[layer]
        for kind in "qk":
            pre, rot = acts[Site(layer, kind, "pre")], acts[Site(layer, kind, "rot")]
            heads = lm.n_heads if kind == "q" else lm.n_kv_heads
            assert pre.shape == (*batch.input_ids.shape, heads, lm.head_dim)
            err = (rope.rotate(pre.double(), batch.positions, spec) - rot.double()).abs().max()
            assert err <= 1e-5, f"{arch} layer {layer} {kind}: max error {err:.2e}"


@pytest.mark.parametrize("arch", ["llama3", "gemma3"])
def test_wrong_pairing_or_theta_is_detected(tiny_tl, arch):
    """The same check fails loudly for interleaved pairing or a 10x theta."""
    lm = tiny_tl(arch)
    batch, acts = _pre_and_rot(lm)
    spec = lm.rope.layer_specs[-1]
    pre, rot = acts[Site(lm.n_layers - 1, "k", "pre")], acts[Site(lm.n_layers - 1, "k", "rot")]
    wrong_pairing = dataclasses.replace(spec, pairing="interleaved")
    wrong_theta = rope.RopeSpec(
        head_dim=spec.head_dim, inv_freq=rope.default_inv_freq(spec.theta * 10, spec.head_dim)
    )
    for wrong in (wrong_pairing, wrong_theta):
        err = (rope.rotate(pre.double(), batch.positions, wrong) - rot.double()).abs().max()
        assert err > 1e-2


def test_llama3_scaling_is_read_from_config(tiny_lm):
    """Llama 3.1 frequencies are the llama3-scaled ones, not plain theta^(-2k/d)."""
    spec = tiny_lm("llama3").rope.layer_specs[0]
    plain = rope.default_inv_freq(500_000.0, 16)
    assert spec.rope_type == "llama3" and not torch.allclose(spec.inv_freq, plain)


def test_gemma3_layer_types_have_their_own_theta(tiny_lm):
    """Sliding layers use theta 1e4 and full layers 1e6 (per-layer rope parameters)."""
    lm = tiny_lm("gemma3")
    thetas = {kind: spec.theta for spec, kind in zip(lm.rope.layer_specs, lm.rope.layer_types)}
    assert thetas == {"sliding_attention": 10_000.0, "full_attention": 1_000_000.0}
    assert lm.rope.qk_norm


def test_qk_norm_pre_vector_is_the_normed_one(tiny_tl):
    """With QK-norm the raw projection is NOT what gets rotated (rotating it misses)."""
    lm = tiny_tl("qwen3")
    batch = one_batch(lm, TEXTS)
    raw_q = {}

    def keep(x, hook):
        raw_q["q"] = x.detach().clone()

    lm.bridge.run_with_hooks(
        batch.input_ids,
        fwd_hooks=[("blocks.0.attn.hook_q", keep)],
        attention_mask=batch.attention_mask,
    )
    rot = capture(lm, batch, [Site(0, "q", "rot")])[Site(0, "q", "rot")]
    wrong = rope.rotate(raw_q["q"].double(), batch.positions, lm.rope.layer_specs[0])
    assert (wrong - rot.double()).abs().max() > 1e-2


def test_hook_tensors_of_every_layout_become_batch_pos_head_dim():
    """Per-head QK-norm hooks fire [b, head, pos, d]; OLMo-2-style norms (before the head
    reshape) and plain projections fire flat [b, pos, head * d]: all land in [b, pos, head, d]."""
    from rope_lens.extract import to_bphd

    b, pos, heads, d = 2, 5, 3, 4
    x = torch.arange(b * pos * heads * d, dtype=torch.float32).reshape(b, pos, heads, d)
    flat = x.flatten(-2)
    assert torch.equal(to_bphd("blocks.0.attn.hook_q", flat, heads), x)
    assert torch.equal(to_bphd("blocks.0.attn.hook_q_normed", flat, heads), x)
    assert torch.equal(to_bphd("blocks.0.attn.hook_k_normed", x.transpose(1, 2), heads), x)
    assert torch.equal(to_bphd("blocks.0.attn.hook_rot_q", x, heads), x)


@pytest.mark.parametrize("arch", ARCHS)
def test_native_vectors_equal_the_bridge_hooks(tiny_lm, tiny_tl, arch):
    """The native engine's q / k / v (post-rotation from the attention call, pre-rotation by
    un-rotating with the layout) equal the bridge's independent hooks to 1e-5 at real tokens
    (padded slots differ after layer 0: sdpa zeroes fully masked rows, eager spreads them)."""
    native, tl = tiny_lm(arch), tiny_tl(arch)
    batch, ours = _pre_and_rot(native)
    _, ref = _pre_and_rot(tl)
    real = batch.attention_mask.bool()
    for site, x in ours.items():
        err = (x[real] - ref[site][real]).abs().max()
        assert err <= 1e-5 * max(1.0, float(ref[site].abs().max())), (site, float(err))
    v = [Site(layer, "v") for layer in range(native.n_layers)]
    ours_v, ref_v = capture(native, batch, v), capture(tl, batch, v)
    for site in v:
        assert torch.allclose(ours_v[site][real], ref_v[site][real], atol=1e-5)
