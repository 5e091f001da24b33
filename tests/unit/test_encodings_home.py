"""One home for positional encodings: ``rope_lens.train.encodings`` holds Table 2's list, the
name parsing and the frequency override, and everything else reads them from there."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import rope_lens
from rope_lens.errors import InputError
from rope_lens.train import encodings as E
from rope_lens.train.config import TrainConfig

ROOT = Path(rope_lens.__file__).parent


def test_importing_the_list_does_not_import_torch():
    """The CLI reads Table 2's list while building its parser (``rope-lens --help``)."""
    code = (
        "import sys, rope_lens.train.encodings, rope_lens.commands.table; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_reader_uses_the_one_list():
    from rope_lens.commands import table as table_cmd
    from rope_lens.viz import training

    assert table_cmd.DEFAULT_ENCODINGS == list(E.TABLE2_NAMES)
    assert training.ENCODING_LABELS is E.TABLE2_LABELS
    assert E.label("0.75-rope-partial") == "0.75-RoPE_partial" and E.label("x") == "x"


def test_no_other_module_spells_out_the_list():
    """No list, tuple, set or dict literal outside train/encodings.py names most of Table 2's
    encodings (train/table.py's paper numbers are keyed by them, one row each: allowed)."""
    names = set(E.TABLE2_NAMES)
    offenders = []
    for path in ROOT.rglob("*.py"):
        if path == Path(E.__file__):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.List | ast.Tuple | ast.Set):
                elts = node.elts
            elif isinstance(node, ast.Dict):
                elts = [k for k in node.keys if k is not None]
                if all(isinstance(v, ast.Dict) for v in node.values):
                    continue  # data keyed by encoding (the paper's perplexities)
            else:
                continue
            found = {e.value for e in elts if isinstance(e, ast.Constant)} & names
            if len(found) >= 5:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_config_parses_the_name_once_into_its_canonical_form():
    cfg = TrainConfig(encoding="0.75-RoPE_reversed")
    assert cfg.encoding == "0.75-rope-reversed"
    assert cfg.positional_encoding == E.get_encoding("0.75-rope-reversed")
    assert cfg.positional_encoding.family == "reversed"
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(InputError, match="unknown encoding"):
        TrainConfig(encoding="alibi")


def test_one_override_reaches_every_rotary_module():
    """Gemma 3 keeps one frequency buffer per layer type: the one override writes both."""
    import torch
    from transformers import AutoModelForCausalLM

    from rope_lens.models.tiny import tiny_config

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("gemma3"))
    modules = E.rotary_modules(model)
    half = model.config.head_dim // 2
    buffers = {n: b for m in modules for n, b in m.named_buffers() if "inv_freq" in n}
    assert len(buffers) == 4  # {sliding,full}_attention_{,original_}inv_freq
    vec = E.get_encoding("0.5-rope-reversed").inv_freq(2 * half)
    E.apply_inv_freq(model, vec)
    for name, buf in buffers.items():
        torch.testing.assert_close(buf.double(), vec, rtol=1e-6, atol=0, msg=name)
    with pytest.raises(E.CheckpointError, match="does not match"):
        E.apply_inv_freq(model, vec[:-1])


def test_theory_families_have_their_own_name():
    from rope_lens.theory import kernel

    assert not hasattr(kernel, "Encoding")
    assert set(kernel.ENCODINGS) <= {"nope", "rope", "p-rope"}
