"""Test helpers (import as ``from tests.helpers import ...``; library code never imports this)."""

from __future__ import annotations

from rope_lens import inputs


def one_batch(lm, texts, window=64, count_bos=False, bos=True):
    """Tokenize ``texts`` for ``lm`` and return a single right-padded batch."""
    seqs = inputs.tokenize(lm.tokenizer, texts, lm.bos_token_id, window, bos=bos)
    has_bos = bos and lm.bos_token_id is not None
    return next(
        inputs.batches(seqs, len(seqs), lm.tokenizer.pad_token_id, has_bos, count_bos=count_bos)
    )
