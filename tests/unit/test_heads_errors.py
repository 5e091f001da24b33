"""Bad input to the head analyses: a one-line InputError before any forward pass."""

import pytest

from rope_lens.analyses import ablation, decompose, per_token
from rope_lens.analyses.head_options import parse_band, parse_positions
from rope_lens.errors import InputError
from rope_lens.extract import check_layers
from tests.heads_helpers import make_batches

BAD_OPTIONS = [
    (per_token, {"head": 4}, "head 4 is out of range"),
    (per_token, {"head": -5}, "head -5 is out of range"),
    (per_token, {"prompt_index": 3}, "--prompt-index 3 is out of range"),
    (decompose, {"head": 0, "query_pos": "500"}, "position 500 is beyond the prompt"),
    (decompose, {"head": 0, "query_pos": "2", "key_pos": "5"}, "attention is causal"),
    (decompose, {"head": 0, "query_pos": "x"}, "cannot read positions"),
    (ablation, {"band": "0:9"}, "outside the frequency range"),
    (ablation, {"band": "5:2"}, "outside the frequency range"),
    (ablation, {"band": "a:b"}, "cannot read band"),
    (ablation, {}, "needs --band"),
    (ablation, {"band": "0:2", "ablation": "shuffle"}, "unknown --ablation"),
    (ablation, {"sweep": "middle"}, "unknown --sweep"),
    (ablation, {"band": "0:2", "head": 9}, "head 9 is out of range"),
]


@pytest.mark.parametrize("module,options,message", BAD_OPTIONS)
def test_bad_options_raise_input_error(tiny_lm, module, options, message):
    """Each bad option names itself and the valid range in a single line."""
    lm = tiny_lm("llama")
    with pytest.raises(InputError, match=message) as err:
        module.analyze(lm, make_batches(lm), [0], options, progress=False)
    assert "\n" not in str(err.value)


def test_layer_out_of_range(tiny_lm):
    """Layers beyond the model are refused (the pipeline validates --layers this way)."""
    with pytest.raises(InputError, match="layer 7 is out of range"):
        check_layers(tiny_lm("llama"), [7])


def test_band_and_position_parsing():
    """Slice-style bands and position lists resolve against the model and the prompt."""
    assert parse_band(":8", 32) == (0, 8)
    assert parse_band("-8:", 32) == (24, 32)
    assert parse_band((3, 3), 32) == (3, 3)
    assert parse_positions("0,3-5,-1", 10) == [0, 3, 4, 5, 9]
    assert parse_positions("all", 10) is None


def test_cli_reports_bad_head_as_one_line(tiny_dirs, capsys, tmp_path):
    """`rope-lens analyze --analysis per-token --head 99` exits 2 with a one-line error."""
    from rope_lens.cli import main

    code = main(
        [
            "analyze",
            "--model",
            str(tiny_dirs["llama"]),
            "--device",
            "cpu",
            "--analysis",
            "per-token",
            "--head",
            "99",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: head 99 is out of range")
    assert "\n" not in err


def test_cli_runs_an_ablation_sweep(tiny_dirs, capsys, tmp_path):
    """The CLI runs `--analysis ablation --sweep low` and saves a table with the sweep rows."""
    import pandas as pd

    from rope_lens.cli import main

    args = [
        "analyze",
        "--model",
        str(tiny_dirs["llama"]),
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
        "--no-progress",
        "--limit",
        "2",
        "--max-len",
        "32",
    ]
    assert main([*args, "--analysis", "ablation", "--sweep", "low", "--sweep-points", "2"]) == 0
    df = pd.read_parquet(tmp_path / "ablation.parquet")
    assert sorted(set(zip(df.band_lo, df.band_hi))) == [(0, 0), (0, 8), (4, 8)]
    assert "delta loss" in capsys.readouterr().out


def test_oversized_decomposition_is_refused(tiny_lm, monkeypatch):
    """A decomposition larger than MAX_ROWS asks to be narrowed instead of filling memory."""
    lm = tiny_lm("llama")
    monkeypatch.setattr(decompose, "MAX_ROWS", 100)
    with pytest.raises(InputError, match="narrow it with --layers, --head"):
        decompose.analyze(lm, make_batches(lm), [0], {}, progress=False)
    one = decompose.analyze(lm, make_batches(lm), [0], {"head": 0, "query_pos": "1"})
    assert len(one) == 2 * (lm.head_dim // 2) <= 100  # query 1 against keys 0 and 1
