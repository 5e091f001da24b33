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
