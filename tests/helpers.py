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
