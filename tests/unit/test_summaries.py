"""``rope-lens analyze`` printouts: headed, aligned columns and no misleading rounding."""

from __future__ import annotations

from rope_lens.analyses import heads
from tests.viz_frames import heads_frame


def test_heads_summary_is_a_table_with_the_rule_and_honest_digits():
    df = heads_frame()
    df.loc[2, "diag_score"] = 0.49996  # just under the threshold: class stays "other"
    df.loc[2, "head_class"] = "other"
    df.loc[3, "diag_score"] = 0.29  # 0.29 * 1000 is 289.999... in floating point
    lines = heads.summarize(df).splitlines()
    assert f">= {heads.THRESHOLD}" in lines[0] and f"{int(df.n_queries.iloc[0]):,}" in lines[0]
    assert lines[1].split() == ["class", "heads"]
    counts = {line.split()[0]: int(line.split()[1]) for line in lines[2:6]}
    assert counts == df["head_class"].value_counts().reindex(heads.CLASSES, fill_value=0).to_dict()
    table = lines[lines.index("") + 1 :]
    assert table[0].split()[:6] == ["score", "rank", "layer", "head", "value", "class"]
    # Fixed-width columns: every row's class starts at the same offset.
    assert len({len(row.rstrip()) - len(row.split()[-1]) for row in table[1:]}) == 1
    rows = [row.split() for row in table[1:]]
    just_under = next(r for r in rows if r[2:4] == ["0", "2"] and r[0] == "diag_score")
    assert just_under[4] == "0.499" and just_under[5] == "other"  # not "0.500 other"
    assert any(r[4] == "0.290" for r in rows if r[0] == "diag_score")
