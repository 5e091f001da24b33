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
- loss rows: ``variant, position_lo, position_hi, loss, n_targets, factor, context``;
- both: ``seconds``, the wall time of the row's forwards (0 for a scaling rule at factor 1
  within the context: identical to the model as trained, so its rows are copied, not rerun).

Each (probe, length, variant) is saved as one pass (``rope_lens.resume.PassCache``) as soon as
it finishes, so a long run killed part way resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import pandas as pd
import torch

from rope_lens.errors import InputError
from rope_lens.extract import run_batches
from rope_lens.inputs import Batch
from rope_lens.models.load import LoadedModel
from rope_lens.resume import PassCache

INTRO = (
    "There is an important piece of information hidden inside a lot of irrelevant text. "
    "Find it and memorize it. I will quiz you about it.\n"
)
FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
)
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "\nWhat is the pass key? The pass key is"

log = logging.getLogger(__name__)

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
    "seconds",
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
    plug: dict[str, Any] = (
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


# ---------------------------------------------------------------------------------------------
# Variants: inference-time p-RoPE and RoPE scaling through rope_parameters
# ---------------------------------------------------------------------------------------------


def _text_config(lm: LoadedModel):
    cfg = lm.hf_model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def scaled_parameters(params: dict, variant: str, factor: float, context: int) -> dict:
    """One layer type's ``rope_parameters`` with the scaling rule ``variant`` at ``factor``
    (``context``: the trained context, the rule's ``original_max_position_embeddings``)."""
    base = {"rope_theta": params["rope_theta"]}
    if "partial_rotary_factor" in params:
        base["partial_rotary_factor"] = params["partial_rotary_factor"]
    if variant == "linear":
        return {**base, "rope_type": "linear", "factor": factor}
    if variant == "dynamic":
        return {**base, "rope_type": "dynamic", "factor": factor}
    if variant == "yarn":
        return {
            **base,
            "rope_type": "yarn",
            "factor": factor,
            "original_max_position_embeddings": context,
        }
    if variant == "llama3":
        return {
            **base,
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": context,
        }
    raise InputError(f"unknown RoPE scaling {variant!r}; choose from {', '.join(SCALINGS)}")


def _rotary_modules(model) -> list[tuple[Any, str, Any]]:
    return [
        (parent, child_name, child)
        for parent in model.modules()
        for child_name, child in parent.named_children()
        if child_name.startswith("rotary_emb")
    ]


@contextlib.contextmanager
def rope_variant(lm: LoadedModel, variant: str, factor: float, context: int) -> Iterator[dict]:
    """Run ``lm`` with its full-attention layers' ``rope_parameters`` set to ``variant`` at
    ``factor`` (sliding layers keep theirs: no distance beyond their window is ever seen).
    transformers rebuilds the rotary module from the edited config; the original module and
    config are restored on exit. Yields the new ``rope_parameters``."""
    cfg = _text_config(lm)
    new_cfg = copy.deepcopy(cfg)
    params = copy.deepcopy(cfg.rope_parameters)
    types = sorted(set(getattr(cfg, "layer_types", None) or ["full_attention"]))
    if all(t in params for t in types):  # per layer type (Gemma 3)
        for t in types:
            if "sliding" not in t:
                params[t] = scaled_parameters(params[t], variant, factor, context)
    else:
        params = scaled_parameters(params, variant, factor, context)
    new_cfg.rope_parameters = params
    if variant == "dynamic":  # dynamic NTK only kicks in past the config's context
        new_cfg.max_position_embeddings = context
    swaps = []
    for parent, name, module in _rotary_modules(lm.hf_model):
        device = next(iter(module.buffers())).device
        kwargs = {}
        if hasattr(module, "layer_type"):
            kwargs["layer_type"] = module.layer_type
        swaps.append((parent, name, module, type(module)(config=new_cfg, **kwargs).to(device)))
    if not swaps:
        raise InputError(f"{lm.name} has no rotary module to rescale")
    try:
        for parent, name, _, new in swaps:
            setattr(parent, name, new)
        yield params
    finally:
        for parent, name, old, _ in swaps:
            setattr(parent, name, old)


def p_rope_edits(lm: LoadedModel, p: float) -> list:
    """Inference-time p-RoPE: the lowest ``1 - p`` of every layer's chunks rotation-free
    (the ablation machinery's ``rotation-free`` band)."""
    from rope_lens.analyses.ablation import Ablation, ablation_hooks

    if not 0 <= p <= 1:
        raise InputError(f"--p must be in [0, 1], got {p}")
    # One band per head size: Gemma 4's full layers have twice its sliding layers' chunks, and
    # "the lowest 1 - p" is a different chunk range in each.
    by_size: dict[int, list[int]] = {}
    for layer in lm.rope.attention_layers:
        if not lm.rope.rotates(layer):  # NoPE layers: nothing turns, nothing to make stop
            continue
        by_size.setdefault(lm.rope.n_chunks(layer), []).append(layer)
    edits: list = []
    for n, layers in by_size.items():
        edits += ablation_hooks(lm, Ablation("rotation-free", round(p * n), n, tuple(layers)))
    return edits


def already_scaled(lm: LoadedModel) -> str | None:
    """The scaling rule the model was trained with on its full-attention layers ("llama3" for
    Llama 3.1, "linear" for Gemma 3 4B+), or None for plain RoPE. The scaling variants replace
    ``rope_parameters`` with a rule that starts from plain RoPE, so on such a model they are a
    different model even at factor 1."""
    types = {
        lm.rope.layer_specs[layer].rope_type
        for layer in lm.rope.attention_layers
        if "sliding" not in lm.rope.layer_types[layer]
    }
    scaled = sorted(types - {"default", "proportional", "rope_lens", "none"})
    return scaled[0] if scaled else None


@contextlib.contextmanager
def variant_edits(lm: LoadedModel, variant: str, factor: float, context: int, p: float):
    """Edits to run with (as ``accuracy`` takes them) for ``variant``."""
    if variant == "as-trained":
        yield []
    elif variant == "p-rope":
        yield p_rope_edits(lm, p)
    elif variant in SCALINGS:
        with rope_variant(lm, variant, factor, context):
            yield []
    else:
        raise InputError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")


# ---------------------------------------------------------------------------------------------
# Loss by position
# ---------------------------------------------------------------------------------------------


def long_sequences(make_batches, bos_token_id: int | None, length: int, n: int) -> list[list[int]]:
    """``n`` sequences of ``length`` tokens cut from the corpus' texts joined end to end
    (BOS first when the model has one); fewer if the corpus is too short."""
    stream: list[int] = []
    need = n * length
    for batch in make_batches():
        for row in range(batch.input_ids.shape[0]):
            real = batch.attention_mask[row].bool()
            ids = batch.input_ids[row][real].tolist()
            if bos_token_id is not None and ids and ids[0] == bos_token_id:
                ids = ids[1:]
            stream.extend(ids)
        if len(stream) >= need:
            break
    head = [bos_token_id] if bos_token_id is not None else []
    body = length - len(head)
    return [head + stream[i * body : (i + 1) * body] for i in range(len(stream) // body)][:n]


def loss_by_position(
    lm: LoadedModel, seqs: Sequence[Sequence[int]], edits: Sequence, bucket: int
) -> list[tuple[int, int, float, int]]:
    """(lo, hi, mean nll, n targets) per position bucket [lo, hi) of the predicted token."""
    plug: dict[str, Any] = (
        {"taps": list(edits)}
        if getattr(lm, "backend", "tl") == "native"
        else {"hooks": list(edits)}
    )
    width = max(len(s) for s in seqs)
    n_buckets = math.ceil(width / bucket)
    nll = torch.zeros(n_buckets, dtype=torch.float64)
    count = torch.zeros(n_buckets, dtype=torch.long)
    for seq in seqs:
        ids = torch.tensor([list(seq)])

        def keep(logits, batch, ids=ids):
            logp = torch.log_softmax(logits[0, :-1].float(), -1)
            tgt = batch.input_ids[0, 1:].to(logp.device)
            loss = -logp.gather(-1, tgt[:, None])[:, 0].double().cpu()
            where = torch.arange(1, ids.shape[1]) // bucket
            nll.index_add_(0, where, loss)
            count.index_add_(0, where, torch.ones_like(where))

        batch = Batch(
            ids,
            torch.ones_like(ids),
            torch.arange(ids.shape[1])[None],
            torch.ones_like(ids, dtype=torch.bool),
        )
        run_batches(lm, [batch], on_logits=keep, progress=False, **plug)
    return [
        (b * bucket, (b + 1) * bucket, float(nll[b] / count[b]), int(count[b]))
        for b in range(n_buckets)
        if count[b] > 0
    ]


# ---------------------------------------------------------------------------------------------
# The analysis
# ---------------------------------------------------------------------------------------------


def default_bucket(loss_len: int, context: int) -> int:
    """Loss bucket width: an eighth of the shorter of the sequence and the trained context, so
    that past the context one bucket edge falls exactly on it (within and beyond never mix)."""
    return max(1, min(loss_len, context) // 8)


def _same_as_trained(variant: str, factor: float, longest: int, context: int) -> bool:
    """A scaling rule at factor 1 on inputs within the trained context is the model as trained
    (linear, YaRN and llama3 leave every frequency alone at factor 1; dynamic NTK only acts past
    the context), so its forward need not be run again (the tests check the frequencies)."""
    return variant in SCALINGS and factor == 1.0 and longest <= context


def _timed_forward(fn) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _passkey_rows(lm, prompts, variant, length, factor, ctx, p) -> list[dict]:
    with variant_edits(lm, variant, factor, ctx, p) as edits:
        acc, seconds = _timed_forward(lambda: accuracy(lm, prompts, edits))
    return [
        {
            "probe": "passkey",
            "variant": variant,
            "length": length,
            "n_tokens": sum(len(q.ids) for q in prompts) / len(prompts),
            "accuracy": acc,
            "n_prompts": len(prompts),
            "factor": factor if variant in SCALINGS else 1.0,
            "p": p if variant == "p-rope" else 1.0,
            "seconds": seconds,
        }
    ]


def _loss_rows(lm, seqs, variant, loss_len, factor, ctx, p, step) -> list[dict]:
    with variant_edits(lm, variant, factor, ctx, p) as edits:
        buckets, seconds = _timed_forward(lambda: loss_by_position(lm, seqs, edits, step))
    return [
        {
            "probe": "loss",
            "variant": variant,
            "length": loss_len,
            "position_lo": lo,
            "position_hi": hi,
            "loss": loss,
            "n_targets": n,
            "factor": factor if variant in SCALINGS else 1.0,
            "p": p if variant == "p-rope" else 1.0,
            "seconds": seconds,
        }
        for lo, hi, loss, n in buckets
    ]


def _cached(cache: PassCache | None, index: int, compute) -> list[dict]:
    """``compute()``'s rows, or the rows a killed earlier run saved as pass ``index`` (the
    cache is keyed by the result's identity: same model, lengths, variants and prompts)."""
    hit = cache.get(index) if cache is not None else None
    if hit is not None:
        return hit[1].to_dict("records")
    rows = compute()
    if cache is not None:
        cache.put(index, {}, pd.DataFrame(rows))
    return rows


def _reuse(rows: list[dict], variant: str, factor: float) -> list[dict]:
    """As-trained rows relabelled as a scaling variant at factor 1 (not run again)."""
    return [{**r, "variant": variant, "factor": factor, "seconds": 0.0} for r in rows]


def _pass_line(what: str, length: int, variant: str, row: dict, with_accuracy: bool) -> str:
    """The log line of one finished pass."""
    score = f"{100 * row['accuracy']:.0f}% " if with_accuracy else ""
    return f"{what} {variant} {length}: {score}({row['seconds']:.0f} s)"


def _variant_passes(
    rows: list[dict],
    variants: Sequence[str],
    make_pass: Callable[[str], list[dict]],
    describe: Callable[[str, dict], str],
    factor: float,
    longest: int,
    ctx: int,
    cache: PassCache | None,
    index: int,
    progress: bool,
) -> int:
    """Run ``make_pass(variant)`` (or read it back from ``cache``) for each variant into
    ``rows``; a scaling rule that is the model as trained reuses the as-trained rows. Returns
    the next pass index."""
    trained: list[dict] | None = None
    for variant in variants:
        if trained is not None and _same_as_trained(variant, factor, longest, ctx):
            rows.extend(_reuse(trained, variant, factor))
            continue
        done = _cached(cache, index, partial(make_pass, variant))
        index += 1
        rows.extend(done)
        trained = done if variant == "as-trained" else trained
        if progress:
            log.info("%s", describe(variant, done[0]))
    return index


def run(
    lm: LoadedModel,
    make_batches,
    lengths: Sequence[int] = (256, 512, 1024),
    variants: Sequence[str] = VARIANTS,
    n_prompts: int = 5,
    p: float = 0.75,
    seed: int = 0,
    context: int | None = None,
    loss_len: int | None = None,
    loss_seqs: int = 1,
    bucket: int | None = None,
    progress: bool = True,
    cache: PassCache | None = None,
) -> pd.DataFrame:
    """Passkey accuracy per (variant, length); loss by position per variant when
    ``loss_len`` is given. Scaling factor per length: max(1, length / context). Each
    (probe, length, variant) is one pass: with ``cache`` a finished pass is saved at once and a
    rerun after a kill skips it. Rows carry ``seconds``, the wall time of their forwards."""
    from rope_lens.analyses.critical import trained_context

    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise InputError(f"unknown variant {bad[0]!r}; choose from {', '.join(VARIANTS)}")
    scaled = already_scaled(lm)
    if scaled and any(v in SCALINGS for v in variants):
        raise InputError(
            f"{lm.name} already uses {scaled} RoPE scaling; the scaling variants would replace "
            "it, not add to it: pass --passkey-variants as-trained,p-rope"
        )
    if not lengths or min(lengths) < 32:
        raise InputError("passkey lengths must be at least 32 tokens")
    if n_prompts < 1:
        raise InputError(f"--passkey-prompts must be at least 1, got {n_prompts}")
    ctx = context or trained_context(lm, "full_attention")[0]
    rows: list[dict] = []
    index = 0
    for length in lengths:
        prompts = make_prompts(lm.tokenizer, lm.bos_token_id, length, n_prompts, seed)
        factor = max(1.0, length / ctx)
        longest = max(len(q.ids) for q in prompts)
        index = _variant_passes(
            rows,
            variants,
            partial(_passkey_rows, lm, prompts, length=length, factor=factor, ctx=ctx, p=p),
            partial(_pass_line, f"passkey {lm.name}", length, with_accuracy=True),
            factor,
            longest,
            ctx,
            cache,
            index,
            progress,
        )
    if loss_len:
        seqs = long_sequences(make_batches, lm.bos_token_id, loss_len, loss_seqs)
        if not seqs:
            raise InputError(f"the corpus has fewer than {loss_len} tokens for the loss probe")
        factor = max(1.0, loss_len / ctx)
        step = bucket or default_bucket(loss_len, ctx)
        _variant_passes(
            rows,
            variants,
            partial(
                _loss_rows, lm, seqs, loss_len=loss_len, factor=factor, ctx=ctx, p=p, step=step
            ),
            partial(_pass_line, f"loss {lm.name}", loss_len, with_accuracy=False),
            factor,
            loss_len,
            ctx,
            cache,
            index,
            progress,
        )
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    df["model"] = lm.name
    df["context"] = ctx
    return df


def _ints(value, name: str) -> list[int]:
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    try:
        return [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError as err:
        raise InputError(f"--{name} takes comma-separated token counts, got {value!r}") from err


def analyze(
    lm: LoadedModel,
    make_batches,
    layers: Sequence[int],
    options: dict,
    progress: bool = True,
    total: int | None = None,
) -> pd.DataFrame:
    """Pipeline entry point (``layers`` unused: variants act on every layer). Options:
    ``passkey_lengths`` ("256,512,1024"), ``passkey_variants`` (all), ``passkey_prompts`` (5),
    ``p`` (0.75), ``context`` (trained), ``loss_len`` (off), ``seed``."""
    lengths = _ints(options.get("passkey_lengths") or "256,512,1024", "passkey-lengths")
    # Accepted by every analysis, meaningless here: refuse rather than record them unused.
    if options.get("no_bos"):  # the probe's prompts are built here, always after BOS
        raise InputError("passkey builds its own prompts with the model's BOS: drop --no-bos")
    if options.get("layers") not in (None, "", "all"):
        raise InputError("passkey runs (and p-RoPE edits) every layer: drop --layers")
    variants = options.get("passkey_variants")
    if not variants:  # the default: every variant that means something for this model
        scaled = already_scaled(lm)
        variants = [v for v in VARIANTS if not (scaled and v in SCALINGS)]
        if scaled:
            log.warning(
                "%s already uses %s RoPE scaling: skipping the scaling variants", lm.name, scaled
            )
    if isinstance(variants, str):
        variants = [v.strip() for v in variants.split(",") if v.strip()]
    try:
        n_prompts = int(options.get("passkey_prompts") or 5)
        p = float(options["p"]) if options.get("p") is not None else 0.75
        context = int(options["context"]) if options.get("context") else None
        loss_len = int(options["loss_len"]) if options.get("loss_len") else None
        loss_seqs = int(options.get("loss_seqs") or 1)
        seed = int(options.get("seed") or 0)
    except (TypeError, ValueError) as err:
        raise InputError(f"bad passkey option: {err}") from err
    cache = PassCache.from_options(options)  # each finished (length, variant) survives a kill
    df = run(
        lm,
        make_batches,
        lengths,
        variants,
        n_prompts,
        p,
        seed,
        context,
        loss_len,
        loss_seqs,
        progress=progress,
        cache=cache,
    )
    if cache is not None:
        cache.clear()
    return df


def _rows(df: pd.DataFrame, probe: str) -> pd.DataFrame:
    sub = df[df.probe == probe]
    return sub.dropna(axis=1, how="all").reset_index(drop=True) if len(sub) else sub.iloc[0:0]


def passkey_table(df: pd.DataFrame) -> pd.DataFrame:
    return _rows(df, "passkey")


def loss_table(df: pd.DataFrame) -> pd.DataFrame:
    return _rows(df, "loss")


def summarize(df: pd.DataFrame) -> str:
    """Accuracy per variant and length; loss in the first and last position bucket."""
    pk = passkey_table(df)
    lines = [f"{df.model.iloc[0]}: passkey accuracy (trained context {int(df.context.iloc[0]):,})"]
    if len(pk):
        # Solved / prompts, so that "100%" of 5 prompts reads as 5/5, not as a rate.
        solved = pk.assign(cell=[f"{a * n:.0f}/{n:.0f}" for a, n in zip(pk.accuracy, pk.n_prompts)])
        grid = solved.pivot_table(
            index="variant", columns="length", values="cell", aggfunc="first", sort=False
        )
        lines.append("  variant     " + " ".join(f"{int(c):>7}" for c in grid.columns))
        for variant, row in grid.iterrows():
            lines.append(f"  {variant:<11} " + " ".join(f"{v:>7}" for v in row))
        copied = sorted(set(pk.variant[(pk.seconds == 0) & (pk.factor == 1)]) - {"as-trained"})
        if copied:
            lines.append(
                f"  ({', '.join(copied)}: factor 1 at these lengths, the model as trained; "
                "rows copied from as-trained)"
            )
    lt = loss_table(df)
    for variant, sub in lt.groupby("variant", sort=False):
        first, last = sub.iloc[0], sub.iloc[-1]
        lines.append(
            f"  loss {variant:<11} positions {int(first.position_lo)}-{int(first.position_hi)}: "
            f"{first.loss:.3f}; {int(last.position_lo)}-{int(last.position_hi)}: {last.loss:.3f}"
        )
    return "\n".join(lines)
