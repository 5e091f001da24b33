"""Figs 2, 8, 9 and Prop 3.2: RoPE's "decay" needs constant, aligned queries and keys."""

import math

import numpy as np
import pytest
import torch

from rope_lens.theory import (
    activation_curve,
    constant_gaussian_frame,
    decay_frame,
    decay_limit,
    default_distances,
    encoding_spec,
    gaussian_expectation,
    random_rope_frame,
    relative_logits,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def fig2():
    return decay_frame(d_heads=(64, 512), max_distance=5000)


def _curve(frame, model, curve):
    part = frame[(frame["model"] == model) & (frame["curve"] == curve)]
    return part["activation"].to_numpy()


def _window_means(a, width=500):
    return np.array([a[i : i + width].mean() for i in range(0, len(a) - 1, width)])


class TestFig2:
    """(a) all-ones q, k decay; (b) fresh Gaussian q, k per position show no trend."""

    def test_constant_decays_for_large_d(self, fig2):
        a = _curve(fig2, "constant", "d=512")
        assert a[0] == pytest.approx(1.0, abs=1e-12)  # 1/d normalisation
        means = _window_means(a)
        assert np.all(np.diff(means) < 0), means  # decreasing at the 500-token scale
        assert means[0] > 0.3 and means[-1] < 0.05

    def test_large_d_approaches_the_limit(self, fig2):
        """The smooth Fig 2a curve is the d -> inf limit; d=512 stays within 0.1 of it."""
        a, lim = _curve(fig2, "constant", "d=512"), _curve(fig2, "constant", "d→∞")
        assert np.abs(a - lim)[100:].max() < 0.1
        # The values read off the paper's Fig 2a (≈0.19, 0.11, 0.06-0.07, 0.02-0.03).
        for r, expected in [(1000, 0.19), (2000, 0.11), (3000, 0.07), (5000, 0.02)]:
            assert lim[r] == pytest.approx(expected, abs=0.015)

    def test_limit_matches_a_huge_d(self):
        r = torch.tensor([0.0, 10.0, 300.0, 1000.0])
        spec = encoding_spec("rope", 2**12)
        huge = activation_curve("constant", r, spec)
        np.testing.assert_allclose(decay_limit(r), huge, rtol=0, atol=5e-3)

    def test_small_d_is_not_smooth(self, fig2):
        """d = 64 does not decay monotonically: why Fig 2a implies d >= 512 (INFERRED)."""
        assert not np.all(np.diff(_window_means(_curve(fig2, "constant", "d=64"))) < 0)

    @pytest.mark.parametrize("curve", ["d=64", "d=512"])
    def test_gaussian_has_no_trend(self, fig2, curve):
        a = _curve(fig2, "gaussian", curve)
        d = int(curve[2:])
        sigma, n = 1 / math.sqrt(d), len(a)  # exact std of q^T R^-r k / d
        assert abs(a.mean()) < 4 * sigma / math.sqrt(n)
        x = np.arange(n)
        slope = np.polyfit(x, a, 1)[0]
        slope_sd = sigma / (math.sqrt(n) * x.std())
        assert abs(slope) < 4 * slope_sd
        assert a.std() == pytest.approx(sigma, rel=0.05)


@pytest.fixture(scope="module")
def fig8():
    return random_rope_frame((4000, 8000, 20_000), n_positions=2000, d_head=256)


class TestFig8RandomRope:
    """Random RoPE: larger L decays faster with constant q, k; Gaussian q, k unchanged."""

    def test_constant_decays_faster_with_l(self, fig8):
        part = fig8[fig8["model"] == "constant"]
        area = part.groupby("max_position")["activation"].mean()
        assert list(area.index) == [0, 4000, 8000, 20_000]
        assert np.all(np.diff(area.to_numpy()) < 0), area

    def test_positions_sorted_and_in_range(self, fig8):
        for L, part in fig8.groupby("max_position"):
            dist = part[part["model"] == "constant"]["distance"].to_numpy()
            assert dist[0] == 0 and np.all(np.diff(dist) > 0)
            if L:
                assert dist[-1] <= L - 1

    def test_gaussian_unaffected(self, fig8):
        for _, part in fig8[fig8["model"] == "gaussian"].groupby("max_position"):
            a = part["activation"].to_numpy()
            assert abs(a.mean()) < 4 / math.sqrt(256 * len(a))


class TestFig9:
    """One Gaussian q and k, repeated: no decay. a(r) ~ N(0, 1/d) at every r, any theta."""

    def test_frame(self):
        frame = constant_gaussian_frame(max_distance=200)
        assert set(frame["curve"]) == {"θ=10k", "θ=500k"}

    @pytest.mark.parametrize("theta", [10_000.0, 500_000.0])
    def test_variance_flat_over_distance(self, theta):
        spec = encoding_spec("rope", 64, theta)
        gen = torch.Generator().manual_seed(0)
        q, k = torch.randn(2, 2000, 1, 64, generator=gen, dtype=torch.float64)  # 2000 draws
        r = torch.tensor([0, 100, 1000, 5000])
        var = (relative_logits(q, k, r, spec) / 64).var(0)
        # chi-square with 2000 dof: 3 sigma is ~10%.
        np.testing.assert_allclose(var, 1 / 64, rtol=0.1)


class TestProp32:
    """E[q^T R^-r k] = 0 for Gaussian q, k at every r: the joint 99% CI covers 0 everywhere."""

    def test_mean_zero_at_every_distance(self):
        frame = gaussian_expectation(encoding_spec("rope", 64), default_distances(5000), 4000)
        assert len(frame) == 13
        assert ((frame["ci_low"] < 0) & (frame["ci_high"] > 0)).all(), frame
        # Var = d, i.e. std 1/sqrt(d) after the 1/d normalisation (rel. error ~1/sqrt(2n)).
        np.testing.assert_allclose(frame["std"], frame["expected_std"], rtol=0.05)

    def test_interval_excludes_a_nonzero_mean(self):
        """Control: the same machinery rejects 0 for the all-ones (aligned) vectors."""
        frame = gaussian_expectation(encoding_spec("rope", 64), [0, 1, 10], 1000)
        ones = activation_curve("constant", torch.tensor([0, 1, 10]), encoding_spec("rope", 64))
        assert (ones.numpy() > frame["ci_high"].to_numpy()).all()
