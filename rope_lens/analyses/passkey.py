"""Long-context probes: passkey retrieval per length, and loss by position.

**Passkey retrieval** (Mohtashami & Jaggi 2023, the standard long-context probe): a five-digit
key is hidden at a random depth in repetitive filler, and the prompt ends with "What is the
pass key? The pass key is". A prompt counts as solved when the model's greedy prediction at
every answer position is the answer's token (teacher forcing: identical to greedy decoding of
the key's tokens, in one forward pass). Accuracy is measured per length for:

- ``as-trained``: the model with its own rotary frequencies;
- ``p-rope``: inference-time p-RoPE, the lowest ``1 - p`` fraction of chunks rotation-free in
  every layer (the ablation machinery's ``rotation-free`` band: ``rope_lens.analyses.ablation``);
- RoPE scaling variants ``linear``, ``dynamic``, ``yarn``, ``llama3``, set through the model
  config's ``rope_parameters`` (factor = length / trained context, at least 1) and applied by
  transformers itself (the model's rotary buffers are recomputed, then restored).

**Loss by position**: mean next-token loss per position bucket of long held-out texts, as
trained and under each variant, to see where loss rises past the trained context.

Columns (one table; ``probe`` says which rows are which):

- passkey rows: ``variant, length, n_tokens (mean prompt length), accuracy, n_prompts,
  factor, context``;
- loss rows: ``variant, position_lo, position_hi, loss, n_targets, factor, context``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from rope_lens.errors import InputError
from rope_lens.extract import run_batches
from rope_lens.inputs import Batch
from rope_lens.models.load import LoadedModel

INTRO = (
    "There is an important piece of information hidden inside a lot of irrelevant text. "
    "Find it and memorize it. I will quiz you about it.\n"
)
FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
)
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "\nWhat is the pass key? The pass key is"

VARIANTS = ("as-trained", "p-rope", "linear", "dynamic", "yarn", "llama3")
SCALINGS = ("linear", "dynamic", "yarn", "llama3")
COLUMNS = [
    "model",
    "probe",
    "variant",
    "length",
    "n_tokens",
    "accuracy",
    "n_prompts",
    "position_lo",
    "position_hi",
    "loss",
    "n_targets",
    "factor",
    "p",
    "context",
]


@dataclass(frozen=True)
class PasskeyPrompt:
    ids: list[int]  # prompt followed by the answer tokens
    n_answer: int
    key: str
    depth: float


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def make_prompts(
    tokenizer,
    bos_token_id: int | None,
    length: int,
    n: int,
    seed: int = 0,
    bos: bool = True,
) -> list[PasskeyPrompt]:
    """``n`` passkey prompts of about ``length`` tokens (answer included), keys and depths
    drawn from ``seed``. The filler is repeated whole, so lengths are exact to within one
    filler sentence."""
    rng = random.Random(seed * 1_000_003 + length)
    intro, filler, question = (
        _ids(tokenizer, INTRO),
        _ids(tokenizer, FILLER),
        _ids(tokenizer, QUESTION),
    )
    head = [bos_token_id] if bos and bos_token_id is not None else []
    out = []
    for _ in range(n):
        key = str(rng.randint(10_000, 99_999))
        needle = _ids(tokenizer, NEEDLE.format(key=key))
        answer = _ids(tokenizer, " " + key)
        fixed = len(head) + len(intro) + len(needle) + len(question) + len(answer)
        n_fill = max(0, math.ceil((length - fixed) / len(filler)))
        depth = rng.random()
        at = round(depth * n_fill)
        body = filler * at + needle + filler * (n_fill - at)
        ids = head + intro + body + question + answer
        out.append(PasskeyPrompt(ids, len(answer), key, depth))
    return out


def _batch(rows: Sequence[PasskeyPrompt], pad_id: int) -> Batch:
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r.ids)] = torch.tensor(r.ids)
        mask[i, : len(r.ids)] = 1
    positions = torch.arange(width).expand(len(rows), width).clone()
    return Batch(ids, mask, positions, mask.bool().clone())


def solved(logits: torch.Tensor, rows: Sequence[PasskeyPrompt]) -> list[bool]:
    """Per row: is the argmax at every answer position the answer's next token?"""
    out = []
    for i, r in enumerate(rows):
        end = len(r.ids)
        start = end - r.n_answer
        pred = logits[i, start - 1 : end - 1].argmax(-1).cpu()
        out.append(bool((pred == torch.tensor(r.ids[start:end])).all()))
    return out


def accuracy(
    lm: LoadedModel,
    prompts: Sequence[PasskeyPrompt],
    edits: Sequence = (),
    batch_size: int = 1,
) -> float:
    """Fraction of ``prompts`` solved under ``edits`` (native taps or TransformerLens hooks,
    as ``ablation_hooks`` returns them; teacher-forced greedy match)."""
    plug = (
        {"taps": list(edits)}
        if getattr(lm, "backend", "tl") == "native"
        else {"hooks": list(edits)}
    )
    if not prompts:
        raise InputError("no passkey prompts to score")
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    hits: list[bool] = []
    for start in range(0, len(prompts), batch_size):
        rows = prompts[start : start + batch_size]

        def keep(logits, batch, rows=rows):
            hits.extend(solved(logits, rows))

        run_batches(lm, [_batch(rows, pad)], on_logits=keep, progress=False, **plug)
    return sum(hits) / len(hits)
