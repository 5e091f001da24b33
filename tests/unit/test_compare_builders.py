"""The atlas builders of `rope-lens compare` against plain-Python recomputations on random
per-model tables (frequency use, head classes, massive chunks, sink heads, truncation)."""

import itertools

import numpy as np
import pandas as pd
import pytest

from rope_lens.commands import compare

RNG = np.random.default_rng(0)


def _bin(chunk: int, n: int) -> float:
    return min(int(chunk / n * compare.N_BINS), compare.N_BINS - 1) / compare.N_BINS


def _band_norm(n_chunks: int) -> pd.DataFrame:
    rows = [
        {"kind": kind, "layer": layer, "head": head, "chunk": c, "mean_norm": RNG.random() + 0.1}
        for kind, layer, head, c in itertools.product("qkv", range(2), range(3), range(n_chunks))
    ]
    return pd.DataFrame(rows).assign(model="m")


@pytest.mark.parametrize("n_chunks", [8, 32, 40])
def test_frequency_use_is_the_mean_norm_per_bin_over_the_kind_mean(n_chunks):
    df = _band_norm(n_chunks)
    out = compare.frequency_use(df).set_index(["kind", "position"])
    for kind in "qk":
        sub = [r for r in df.to_dict("records") if r["kind"] == kind]
        per_bin: dict[float, list[float]] = {}
        for r in sub:
            per_bin.setdefault(_bin(r["chunk"], n_chunks), []).append(r["mean_norm"])
        means = {b: sum(v) / len(v) for b, v in per_bin.items()}
        overall = sum(means.values()) / len(means)
        for b, m in means.items():
            assert out.loc[(kind, b), "relative_norm"] == pytest.approx(m / overall)
    assert "v" not in set(out.index.get_level_values(0))


def test_positional_heads_are_class_shares():
    df = pd.DataFrame({"head_class": ["sink"] * 3 + ["other"] * 5 + ["diagonal"] * 2})
    df["model"] = "m"
    out = compare.positional_heads(df).set_index("head_class").share
    assert out.to_dict() == pytest.approx({"sink": 0.3, "other": 0.5, "diagonal": 0.2})


def test_massive_chunks_share_of_heads_with_a_massive_dim_per_bin():
    n_chunks, n_heads = 32, 4
    rows = []
    for kind, layer, head, dim in itertools.product("qk", range(2), range(n_heads), range(64)):
        chunk = dim % n_chunks  # two dims per chunk
        rows.append(
            {
                "record": "dim",
                "kind": kind,
                "layer": layer,
                "head": head,
                "chunk": chunk,
                "massive": bool(RNG.random() < 0.05),
            }
        )
    rows.append({"record": "disruption", "kind": None, "massive": None})
    df = pd.DataFrame(rows).assign(model="m")
    out = compare.massive_chunks(df).set_index(["kind", "position"]).share
    dims = [r for r in rows if r["record"] == "dim"]
    for kind in "qk":
        for b in sorted({_bin(c, n_chunks) for c in range(n_chunks)}):
            heads = {(r["layer"], r["head"]) for r in dims if r["kind"] == kind}
            hit = {
                (r["layer"], r["head"])
                for r in dims
                if r["kind"] == kind and _bin(r["chunk"], n_chunks) == b and r["massive"]
            }
            assert out.loc[(kind, b)] == pytest.approx(len(hit) / len(heads))


def test_sink_heads_rate_and_bos_contribution():
    n_chunks = 16
    rows = []
    for layer, head in itertools.product(range(3), range(4)):
        sink = bool(RNG.random() < 0.5) or (layer, head) == (0, 0)
        order = RNG.permutation(n_chunks)
        for c in range(n_chunks):
            rows.append(
                {
                    "layer": layer,
                    "head": head,
                    "chunk": c,
                    "is_sink": sink,
                    "bos_minus_others": RNG.normal(),
                    "rank": int(order[c]) + 1,
                }
            )
    df = pd.DataFrame(rows).assign(model="m")
    out = compare.sink_heads(df)
    heads = {(r["layer"], r["head"]): r["is_sink"] for r in rows}
    assert out.sink_rate.iloc[0] == pytest.approx(sum(heads.values()) / len(heads))
    for b, got in out.set_index("position").bos_minus_others.items():
        vals = [
            r["bos_minus_others"] for r in rows if r["is_sink"] and _bin(r["chunk"], n_chunks) == b
        ]
        assert got == pytest.approx(sum(vals) / len(vals))


def test_truncation_keeps_one_row_per_low_band():
    df = pd.DataFrame(
        {
            "ablation": ["none", "rotation-free", "rotation-free", "rotation-free", "mean"],
            "sweep": [None, "low", "low", "high", "low"],
            "band_lo": [0, 24, 24, 0, 24],
            "band_hi": [0, 32, 32, 8, 32],
            "band_fraction": [0.0, 0.25, 0.25, 0.25, 0.25],
            "delta_loss": [0.0, 0.01, 0.01, 2.0, 3.0],
        }
    ).assign(model="m")
    out = compare.truncation(df)
    assert out.to_dict("records") == [{"model": "m", "band_fraction": 0.25, "delta_loss": 0.01}]
