"""Test helpers (import as ``from tests.helpers import ...``; library code never imports this)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rope_lens import inputs

TRAIN_FIXTURE = Path(__file__).parent / "fixtures" / "train"


# The same tiny run as ``--set`` flags, for the command-line tests.
TINY_TRAIN_SETS = [
    f"--set={kv}"
    for kv in (
        "model.vocab_size=384",
        "model.d_model=32",
        "model.n_layers=1",
        "model.n_heads=2",
        "model.n_kv_heads=1",
        "model.head_dim=16",
        "model.d_ff=64",
        "seq_len=32",
        "batch_size=8",
        "micro_batch_size=8",
        "steps=2",
        "warmup_steps=1",
        "ckpt_every=1",
        "eval_tokens=128",
        "eval_lengths=1",
    )
]


def tiny_train_config(**kw: Any):
    """The tiny training run the loop and multi-process tests share (a 2-layer 0.75-RoPE
    model on the fixture corpus, 2 micro-batches per step); ``kw`` overrides any field."""
    from rope_lens.train.config import ModelConfig, TrainConfig

    base: dict[str, Any] = dict(
        model=ModelConfig(
            vocab_size=384, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64
        ),
        encoding="0.75-rope",
        data_source=str(TRAIN_FIXTURE),
        seq_len=32,
        batch_size=8,
        micro_batch_size=4,
        lr=3e-3,
        warmup_steps=2,
        log_every=1,
    )
    return TrainConfig(**{**base, **kw})


def one_batch(lm, texts, window=64, count_bos=False, bos=True):
    """Tokenize ``texts`` for ``lm`` and return a single right-padded batch."""
    seqs = inputs.tokenize(lm.tokenizer, texts, lm.bos_token_id, window, bos=bos)
    has_bos = bos and lm.bos_token_id is not None
    return next(
        inputs.batches(seqs, len(seqs), lm.tokenizer.pad_token_id, has_bos, count_bos=count_bos)
    )


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``rope-lens ARGV`` in this process: (exit status, stdout, stderr)."""
    from rope_lens import cli

    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(err: str, message: str) -> None:
    """``err`` is exactly one ``error: ...`` line, and it says ``message``."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], lines[0]


def fails_in_one_line(capsys, argv, match: str) -> None:
    """``rope-lens ARGV`` exits 2 with one ``error:`` line saying ``match``, no traceback
    (other lines, e.g. warnings, may come before it)."""
    code, _, err = run_cli(capsys, *argv)
    assert code == 2, err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and match in lines[0], err
    assert "Traceback" not in err


def prompts_file(folder: Path, lines: list[str]) -> Path:
    """``lines`` as a prompts file (one text per line) in ``folder``."""
    path = folder / "prompts.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def record_eager(folder, monkeypatch):
    """The model in ``folder`` in eager mode, with its own eager kernel recording, per layer,
    the q / k / v it receives and the attention probabilities it returns (into the dict
    returned beside it; ``monkeypatch`` undoes the patch). A reference independent of
    rope-lens' engine: the model file's ``eager_attention_forward`` itself is wrapped."""
    import sys

    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    seen: dict[int, dict[str, torch.Tensor]] = {}
    files = {
        type(m).__module__
        for m in model.modules()
        if hasattr(m, "layer_idx") and "Attention" in type(m).__name__
    }
    for name in files:
        module_file = sys.modules[name]
        original = getattr(module_file, "eager_attention_forward", None)
        if original is None:
            continue

        def recording(module, query, key, value, *args, _original=original, **kw):
            out, weights = _original(module, query, key, value, *args, **kw)
            seen[int(module.layer_idx)] = {
                "q": query.detach().clone(),
                "k": key.detach().clone(),
                "v": value.detach().clone(),
                "p": weights.detach().clone(),
            }
            return out, weights

        monkeypatch.setattr(module_file, "eager_attention_forward", recording)
    return model, seen
