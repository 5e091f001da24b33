"""The notebook API runs the same analyses as the CLI on the same batches."""

import pandas as pd
import pytest

import rope_lens
from rope_lens import inputs
from rope_lens.analyses import band_norms, heads
from rope_lens.errors import InputError

TEXTS = ["the cat sat on the mat", "a b c d e f g h i j", "RoPE rotates pairs of dimensions"]


@pytest.fixture
def lens(tiny_lm):
    return rope_lens.Lens(tiny_lm("llama3"))


def test_band_norms_equal_the_library_path(lens):
    lm = lens.lm
    seqs = inputs.tokenize(lm.tokenizer, TEXTS, lm.bos_token_id, 16)
    batches = inputs.batches(seqs, 2, lm.tokenizer.pad_token_id, has_bos=True)
    expected = band_norms.run(lm, batches, range(lm.n_layers), progress=False)
    got = lens.run("band-norm", prompts=TEXTS, max_len=16, batch_size=2)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True))


def test_negative_layers_and_options_reach_the_analysis(lens):
    lm = lens.lm
    df = lens.run("heads", prompts=TEXTS, layers=[-1], max_len=16)
    assert list(df.columns) == heads.columns(spread=False)
    spread = lens.run("heads", prompts=TEXTS, layers=[-1], max_len=16, spread=True)
    assert list(spread.columns) == heads.columns(spread=True)  # the option reaches the run
    assert set(df.layer) == {lm.n_layers - 1} and len(df) == lm.n_heads
    one = lens.run("per-token", prompts=TEXTS, layers=[0], max_len=16, head=1, prompt_index=2)
    assert set(one["head"]) == {1}
    n_tokens = len(lm.tokenizer(TEXTS[2], add_special_tokens=False)["input_ids"]) + 1  # + BOS
    assert one.pos.max() == min(n_tokens, 16) - 1  # the third prompt, not the first
    assert "layer" in lens.summarize("heads", df)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda lz: lz.run("nope", prompts=TEXTS), "unknown analysis"),
        (lambda lz: lz.run("band-norm", prompts=["", "  "]), "no non-empty prompts"),
        (lambda lz: lz.run("band-norm", prompts=TEXTS, layers=[99]), "out of range"),
        (lambda lz: lz.run("per-token", prompts=TEXTS, head=99), "head"),
        (lambda lz: lz.run("per-token", prompts=TEXTS, head="first"), "head must be an integer"),
    ],
)
def test_bad_input_is_one_clear_error(lens, call, message):
    with pytest.raises(InputError, match=message):
        call(lens)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        # issue 21 case 8: the CLI refuses these; Lens once ran them (limit=-1 dropped the last
        # prompt, limit=0 meant all, sweep_points=0 quietly ran 8)
        (dict(limit=-1), "limit must be at least 1, got -1"),
        (dict(limit=0), "limit must be at least 1, got 0"),
        (dict(analysis="ablation", sweep="low", sweep_points=0), "sweep_points must be at least 1"),
        (dict(max_len=1), "max_len must be at least 2"),
        (dict(batch_size=0), "batch_size must be at least 1"),
        (dict(max_tokens=0), "max_tokens must be at least 1"),
        # wrong types: one line each, never a raw TypeError
        (dict(layers=5), r"layers=5 must be a list: layers=\[5\]"),
        (dict(layers=["0"]), "layers must hold integers"),
        (dict(limit=2.5), "limit must be an integer, got float 2.5"),
        (dict(bos="yes"), "bos is a switch"),
        (dict(analysis="heads", spread="yes"), "spread is a switch"),
        (dict(analysis="per-token", head=1.5), "head must be an integer"),
        (dict(analysis="ablation", sweep="lo"), "sweep must be one of.*did you mean 'low'"),
        (dict(analysis=3), "the analysis is a name"),
        # the nearest option name, Lens' own keywords included
        (dict(layer=[0]), "did you mean 'layers'"),
        (dict(max_length=16), "did you mean 'max_len'"),
        (dict(text="abc"), "did you mean 'texts'"),
    ],
)
def test_lens_is_as_strict_as_the_cli(lens, kwargs, message):
    analysis = kwargs.pop("analysis", "band-norm")
    with pytest.raises(InputError, match=message):
        lens.run(analysis, prompts=TEXTS, **kwargs)


def test_cli_style_values_still_pass(lens):
    """What the CLI would parse passes: the layer syntax, numpy integers from a table."""
    import numpy as np

    df = lens.run("per-token", prompts=TEXTS, layers="0,-1", max_len=16, head=np.int64(1))
    assert set(df.layer) == {0, lens.lm.n_layers - 1} and set(df["head"]) == {1}
    assert len(lens.run("band-norm", prompts=TEXTS, limit=np.int64(1), max_len=16)) > 0


def test_import_stays_light():
    """``import rope_lens`` must not pull torch or transformers (the CLI's --help starts
    instantly); the lazy names still resolve."""
    import subprocess
    import sys

    code = (
        "import sys, rope_lens, rope_lens.cli; "
        "print('transformers' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
    assert rope_lens.RopeSpec.__module__ == "rope_lens.rope" and rope_lens.Lens.__name__ == "Lens"
