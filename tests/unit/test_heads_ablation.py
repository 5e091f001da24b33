"""Rotation ablations: no-ops are no-ops, NoPE equivalence, per-head scope, loss bookkeeping."""

import numpy as np
import pytest
import torch

from rope_lens.analyses import ablation, heads
from rope_lens.analyses.ablation import Ablation, LossMeter, measure, run_ablations
from tests.heads_helpers import fresh, make_batches, make_nope, planted_qwen2

SCORE_COLS = list(heads.POSITIONAL)  # ablation tables carry the positional scores


def _one(lm, ab, **kw):
    df = run_ablations(lm, make_batches(lm), [ab], progress=False, **kw)
    return df[df.ablation != "none"], df[df.ablation == "none"]


def test_empty_band_is_exactly_the_model(tiny_lm):
    """A zero-width band installs no hook: delta loss and delta scores are exactly 0."""
    lm = tiny_lm("llama3")
    abl, _ = _one(lm, Ablation("rotation-free", 5, 5, tuple(range(lm.n_layers))))
    assert (abl.delta_loss == 0).all()
    assert (abl[[f"d_{c}" for c in SCORE_COLS]].to_numpy() == 0).all()


def test_rotation_free_is_a_noop_where_nothing_rotates(tmp_path):
    """On a NoPE model (zero frequencies) the recomputed scores reproduce the model: delta 0."""
    lm = make_nope(fresh("llama", tmp_path))
    abl, _ = _one(lm, Ablation("rotation-free", 0, lm.head_dim // 2, tuple(range(lm.n_layers))))
    assert abs(abl.delta_loss.iloc[0]) < 1e-5
    assert np.abs(abl[[f"d_{c}" for c in SCORE_COLS]].to_numpy()).max() < 1e-5


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_rotation_free_everywhere_equals_nope(tmp_path, arch):
    """Rotation-free on all chunks of all layers gives the same loss and heads as NoPE."""
    lm = fresh(arch, tmp_path)
    abl, _ = _one(lm, Ablation("rotation-free", 0, lm.head_dim // 2, tuple(range(lm.n_layers))))
    nope = make_nope(fresh(arch, tmp_path / "nope"))
    loss, _, scores = measure(nope, make_batches(nope), [], range(nope.n_layers), progress=False)
    assert abl.loss.iloc[0] == pytest.approx(loss, abs=1e-5)
    np.testing.assert_allclose(abl[SCORE_COLS].to_numpy(), scores[SCORE_COLS].to_numpy(), atol=1e-5)
    assert abs(abl.delta_loss.iloc[0]) > 1e-4  # and that is a real change from RoPE


@pytest.mark.parametrize("kind", ["zero", "mean"])
def test_zero_and_mean_ablations_change_the_loss(tiny_lm, kind):
    """Zeroing or mean-replacing half the chunks everywhere moves the loss."""
    lm = tiny_lm("llama")
    abl, _ = _one(lm, Ablation(kind, 0, lm.head_dim // 4, tuple(range(lm.n_layers))))
    assert abs(abl.delta_loss.iloc[0]) > 1e-4


def test_single_head_scope(tiny_lm):
    """Ablating head 2 of layer 1 changes that head only; layer 0 and its neighbours stay."""
    lm = tiny_lm("llama")
    abl, _ = _one(lm, Ablation("zero", 0, lm.head_dim // 2, (1,), heads=(2,)))
    moved = abl.set_index(["layer", "head"])["d_diag_score"].abs()
    assert moved.loc[(1, 2)] > 1e-4
    others = [(layer, h) for layer in (0, 1) for h in range(lm.n_heads) if (layer, h) != (1, 2)]
    assert moved.loc[others].max() == 0.0


def test_planted_heads_need_their_high_frequencies(tmp_path):
    """Rotation-free on the chunks holding psi kills the planted positional heads; on the
    lowest chunk it does not; the mean ablation keeps them (psi is constant over tokens)."""
    lm = planted_qwen2(tmp_path)
    n = lm.head_dim // 2
    configs = [
        Ablation("rotation-free", 0, 3, (0,)),
        Ablation("rotation-free", n - 1, n, (0,), heads=(0, 2)),
        Ablation("mean", 0, 3, (0,)),
    ]
    df = run_ablations(lm, make_batches(lm), configs, score_layers=[0], progress=False)
    get = df.set_index(["ablation", "band_lo", "head"])
    assert get.loc[("rotation-free", 0, 0), "diag_score"] < 0.5
    assert get.loc[("rotation-free", 0, 2), "prev_score"] < 0.5
    assert get.loc[("rotation-free", n - 1, 0), "diag_score"] > 0.99
    assert get.loc[("mean", 0, 0), "diag_score"] > 0.99
    assert get.loc[("mean", 0, 2), "prev_score"] > 0.99


def test_loss_meter_equals_transformers_loss(tiny_lm):
    """nats/token over counted targets equals HF's own causal-LM loss on an unpadded row."""
    lm = tiny_lm("qwen2")
    batch = next(make_batches(lm, texts=["To be, or not to be, that is the question"])())
    meter = LossMeter()
    with torch.inference_mode():
        out = lm.hf_model(batch.input_ids, labels=batch.input_ids)
        meter(out.logits, batch)
    assert meter.loss == pytest.approx(float(out.loss), rel=1e-5)
    assert meter.n == batch.input_ids.shape[1] - 1


def test_sweep_bands():
    """Sweeps take the m lowest chunks (n-m..n) or the m highest (0..m), m up to all."""
    low = ablation.sweep_configs("rotation-free", "low", 32, [0], None, 4)
    assert [(c.lo, c.hi) for c in low] == [(24, 32), (16, 32), (8, 32), (0, 32)]
    both = ablation.sweep_configs("zero", "both", 8, [0, 1], None, 8)
    assert [(c.sweep, c.lo, c.hi) for c in both][8] == ("high", 0, 1)
    assert len(both) == 15  # the all-chunks band is shared by both sides


def test_spare_bos_reaches_every_sweep_point(tiny_lm):
    """--spare-bos with --sweep must not be dropped silently."""
    lm = tiny_lm("llama")
    options = {"sweep": "both", "sweep_points": 2, "ablation": "mean", "spare_bos": True}
    configs = ablation.configs_from_options(lm, [0], options)
    assert len(configs) > 1 and all(c.spare_first for c in configs)


def test_memory_is_bounded_by_construction(tiny_lm):
    """Accumulators have the same shapes after 1 and after 3 batches (nothing is kept per batch)."""
    lm = tiny_lm("llama")
    shapes = []
    for n_texts in (1, 3):
        red = heads.HeadScoreReducer(lm, [0, 1])
        mean = ablation.MeanReducer(lm, [0, 1])
        from rope_lens.extract import SiteTap, run_batches

        batches = make_batches(lm, batch_size=1)
        run_batches(lm, list(batches())[:n_texts], taps=[red, SiteTap([mean])], progress=False)
        shapes.append(
            [tuple(t.shape) for t in red.sums.values()]
            + [tuple(t.shape) for t in mean.sums.values()]
        )
    assert shapes[0] == shapes[1]


def test_spare_first_keeps_the_bos_sink(tmp_path):
    """Mean-replacing the sink head's lowest chunk kills it unless BOS is spared."""
    lm = planted_qwen2(tmp_path)
    n = lm.head_dim // 2
    configs = [
        Ablation("mean", n - 1, n, (0,)),
        Ablation("mean", n - 1, n, (0,), spare_first=True),
    ]
    df = run_ablations(lm, make_batches(lm), configs, score_layers=[0], progress=False)
    sink = df[(df["head"] == 1) & (df.ablation == "mean")].set_index("spare_first").sink_score
    assert sink.loc[False] < 0.5 < 0.99 < sink.loc[True]
