"""Data-parallel analyses (rope_lens.distributed): 2 CPU processes (gloo, under torchrun)
give the one-process tables: sums to 1e-6 relative, counts exactly.

One torchrun launch runs the real CLI for band norms, heads, a mean ablation and massive values
(whose running max merges with MAX), and
a band-norm run interrupted at a different batch on each rank and then resumed per shard.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rope_lens import cli, distributed, io
from tests.dist import analyze_worker as worker
from tests.dist import torchrun

ROOT = Path(__file__).resolve().parents[2]
# 9 texts in batches of 2: 5 batches, 3 on rank 0 and 2 on rank 1 (an uneven split).
TEXTS = [f"Text {i}: the rotation of {'queries and keys ' * (1 + i % 3)}at position {i}." for i in range(9)]  # fmt: skip
COUNTS = {"n_tokens", "n_queries", "n_targets", "chunk", "layer", "head", "kv_head"}


def test_shard_splits_disjointly_and_covers():
    # Outside a process group everything is a one-process run.
    assert not distributed.active() and distributed.world() == 1 and distributed.is_main()
    assert list(distributed.shard(range(5))) == [0, 1, 2, 3, 4]
    assert distributed.shard_total(5) == 5
    assert distributed.per_rank(Path("a/.x.partial.safetensors")) == Path(
        "a/.x.partial.safetensors"
    )
    assert distributed.mergeable(taps=[object()]) is None


def test_counters_sum_exactly_and_dicts_merge():
    a = {"n": {"0": 3, "1": 4}, "n_prev": {"0": 2}}
    b = {"n": {"1": 5, "2": 1}, "n_prev": {}}
    assert distributed._sum_extras([a, b]) == {"n": {"0": 3, "1": 9, "2": 1}, "n_prev": {"0": 2}}
    assert distributed._sum_extras([{"n": 2**60}, {"n": 1}]) == {"n": 2**60 + 1}
    with pytest.raises(RuntimeError, match="disagree"):
        distributed._sum_extras(["a", "b"])


def _compare(one: pd.DataFrame, two: pd.DataFrame) -> float:
    """Max relative deviation of float columns; other columns must be identical."""
    assert list(one.columns) == list(two.columns) and len(one) == len(two)
    worst = 0.0
    for col in one.columns:
        a, b = one[col].to_numpy(), two[col].to_numpy()
        if col not in COUNTS and np.issubdtype(a.dtype, np.floating):
            assert (np.isnan(a) == np.isnan(b)).all(), col
            ok = np.isfinite(a)
            assert (a[~ok & ~np.isnan(a)] == b[~ok & ~np.isnan(a)]).all(), col  # same infinities
            rel = np.abs(a[ok] - b[ok]) / np.maximum(np.abs(a[ok]), 1e-12)
            top = float(rel.max()) if rel.size else 0.0
            worst = max(worst, top)
            assert top <= 1e-6, (col, top)
        else:  # exact, NaN equal to NaN (massive values' record rows have no layer)
            assert one[col].equals(two[col]), col
    return worst


def test_two_processes_equal_one(tmp_path, tiny_dirs):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(TEXTS) + "\n")
    model = str(tiny_dirs["llama"])
    out2 = tmp_path / "two"
    proc = torchrun("tests/dist/analyze_worker.py", model, str(prompts), str(out2), timeout=220)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Each rank kept its own shard's checkpoint at the interrupt and removed it once resumed.
    for r in (0, 1):
        assert f"rank {r} checkpoint kept: True" in proc.stdout, proc.stdout
        assert f"rank {r} checkpoint after resume: False" in proc.stdout, proc.stdout
    # The loops were split: 5 batches per pass, 3 on rank 0 and 2 on rank 1 (the ablation
    # runs two passes: the baseline with the means, then the ablated one).
    for name, per_pass in (("band-norm", 1), ("heads", 1), ("ablation", 2)):
        for r, n in ((0, 3), (1, 2)):
            assert f"{name}: rank {r} ran {n * per_pass} batches" in proc.stdout, proc.stdout
    # massive values: a detection pass (sums and a running max), maybe a disruption pass
    n = [int(proc.stdout.split(f"massive-values: rank {r} ran ")[1].split()[0]) for r in (0, 1)]
    assert n[0] >= 3 and n[0] % 3 == 0 and n[1] == n[0] // 3 * 2, (n, proc.stdout)
    common = worker.common(model, str(prompts))
    deviations = {}
    for name, extra in {**worker.RUNS, "resume": None}.items():
        out1 = tmp_path / "one" / ("band-norm" if extra is None else name)
        if extra is not None:  # the resumed run is compared with the plain band-norm run
            assert cli.main(["analyze", *common, *extra, "--out", str(out1)]) == 0
        table = name.replace("-", "_") if name != "resume" else "band_norm"
        one, meta1 = io.load_table(out1 / f"{table}.parquet")
        two, meta2 = io.load_table(out2 / name / f"{table}.parquet")
        deviations[name] = _compare(one, two)
        assert meta1["world_size"] == 1 and meta2["world_size"] == 2
        assert meta1["identity"] == meta2["identity"]
        # rank 1 wrote nothing: one table, one sidecar, no leftover rank checkpoints
        leftovers = sorted(p.name for p in (out2 / name).iterdir() if "rank" in p.name)
        assert leftovers == [], leftovers
    print("max relative deviation, 2 processes vs 1:", deviations)
