"""``Lens``: the notebook entry point. One loaded model, any analysis, a DataFrame back.

    from rope_lens import Lens

    lens = Lens("smollm2-135m")
    norms = lens.run("band-norm", prompts="wiki", max_tokens=20_000)
    heads = lens.run("heads", layers=[0, -1])
    parts = lens.run("decompose", prompts="It's a truth universally acknowledged",
                     layers=[3], head=2, query_pos="5")
    qk = lens.qk("It's a truth universally acknowledged", layers=[0], stage="rot")

Bring your own model: ``Lens(model, tokenizer)`` takes a transformers causal LM already in
memory (and its tokenizer), ``Lens(bridge)`` a TransformerLens ``TransformerBridge``.

It does what ``rope-lens analyze`` does minus the files: the same analyses
(``rope_lens.analyses.ANALYSES``), the same options (``head``, ``band``, ``ablation``, ``sweep``,
``query_pos``, ...; see ``rope-lens analyze --help``), the same input conventions (BOS prepended
and not counted, right padding, truncation to the window with one warning). Save a result with
``rope_lens.io.save_table`` or run the CLI when you want the JSON sidecar and resumability.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from rope_lens import inputs
from rope_lens.analyses import ANALYSES
from rope_lens.errors import InputError
from rope_lens.extract import STAGES, Site, capture, check_layers
from rope_lens.inputs import Batch
from rope_lens.models import load_model
from rope_lens.models.load import LoadedModel
from rope_lens.request import BATCH_SIZE, MAX_LEN

Prompts = str | Path | Sequence[str]

QK_COLUMNS = ["prompt", "layer", "kind", "stage", "head", "pos", "token", "dim", "value"]


def as_texts(prompts: Prompts, limit: int | None = None) -> list[str]:
    """What ``prompts`` means, as a list of texts.

    - a built-in source name (``shakespeare``, ``wiki``), a ``Path``, or a string naming an
      existing file: the texts of that source (``.txt``: one per line; ``.jsonl``: ``text``);
    - a string that looks like a file name (no spaces, ends in ``.txt`` / ``.jsonl``) but does
      not exist: an error, not a one-word text;
    - any other string: one text;
    - a list of strings: those texts (empty ones dropped).
    """
    if isinstance(prompts, Path) or (isinstance(prompts, str) and _names_a_source(prompts)):
        return inputs.load_texts(prompts, limit)
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise InputError("no non-empty prompts given")
    return texts[:limit] if limit else texts


def _names_a_source(text: str) -> bool:
    if text in inputs.BUILTIN_SOURCES:
        return True
    if "\n" in text or len(text) > 4096:
        return False
    if Path(text).exists():
        return True
    return not any(c.isspace() for c in text) and text.endswith((".txt", ".jsonl"))


class Lens:
    """A loaded model plus the input conventions of the CLI.

    Args:
        model: registry name (``rope-lens models``), hub id or local HF folder; an already
            loaded ``LoadedModel``; a transformers causal LM in memory (give its
            ``tokenizer`` too); or a TransformerLens ``TransformerBridge``.
        tokenizer: the tokenizer of an in-memory transformers model (default: loaded from
            ``model.config.name_or_path`` when that is a folder or hub id).
        device, dtype, revision, trust_remote_code: as for ``rope-lens analyze`` (a model in
            memory keeps its own device and dtype).
        backend: ``native`` (the model's own attention kernel) or ``tl`` (TransformerLens
            bridge); a bridge you pass is always ``tl``.
        name: label of an in-memory model in tables (default: its ``name_or_path``, or
            ``custom``).

    An in-memory model is used in place, not copied: on ``native`` its attention
    implementation is switched to rope-lens' observing wrapper of the same kernel (outputs
    unchanged); on ``tl`` the bridge replaces its attention modules.
    """

    def __init__(
        self,
        model: Any = "smollm2-135m",
        tokenizer: Any = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        revision: str | None = None,
        trust_remote_code: bool = False,
        backend: str = "native",
        name: str | None = None,
    ) -> None:
        if isinstance(model, LoadedModel):
            self.lm = model
            return
        if _is_bridge(model):
            self.lm = _from_bridge(model, tokenizer, name)
            return
        hf_model = None
        if isinstance(model, str | Path):
            label = str(model)
        elif hasattr(model, "config") and hasattr(model, "get_input_embeddings"):
            hf_model = model  # a transformers model in memory: used in place
            label = name or getattr(model.config, "name_or_path", "") or "custom"
            if tokenizer is None:
                tokenizer = _tokenizer_for(model, trust_remote_code)
        else:
            raise InputError(
                f"Lens cannot use a {type(model).__name__}: give a model name or folder, a "
                "transformers causal LM (with its tokenizer), a TransformerBridge or a LoadedModel"
            )
        self.lm = load_model(
            str(label),
            device=device,
            dtype=dtype,
            revision=revision,
            trust_remote_code=trust_remote_code,
            hf_model=hf_model,
            backend=backend,
            tokenizer=tokenizer,
        )

    @property
    def bridge(self):
        """The TransformerLens bridge, for hook-point work in a notebook
        (``lens.bridge.run_with_cache(...)``). On the default native backend this boots a
        second copy of the model once (the bridge rewrites attention in place); on ``tl`` it is
        the model the analyses run on."""
        return self.lm.get_bridge()

    def __repr__(self) -> str:
        lm = self.lm
        return (
            f"Lens({lm.name!r}: {lm.n_layers} layers, {lm.n_heads} query / {lm.n_kv_heads} KV "
            f"heads, head_dim {lm.head_dim}, {lm.device}, {lm.dtype})"
        )

    def texts(self, prompts: Prompts = "shakespeare", limit: int | None = None) -> list[str]:
        """The texts ``prompts`` stands for (see :func:`as_texts`)."""
        return as_texts(prompts, limit)

    def batches(
        self,
        prompts: Prompts = "shakespeare",
        max_len: int = MAX_LEN,
        batch_size: int = BATCH_SIZE,
        bos: bool = True,
        count_bos: bool = False,
        max_tokens: int | None = None,
        limit: int | None = None,
    ) -> Callable[[], Iterator[Batch]]:
        """A factory of fresh batch iterators (analyses with two passes call it twice)."""
        lm = self.lm
        seqs = inputs.tokenize(
            lm.tokenizer,
            self.texts(prompts, limit),
            lm.bos_token_id,
            min(max_len, lm.max_context),
            bos=bos,
            max_tokens=max_tokens,
            count_bos=count_bos,
        )
        has_bos = bos and lm.bos_token_id is not None
        pad = lm.tokenizer.pad_token_id
        return inputs.batch_factory(seqs, batch_size, pad, has_bos, count_bos, max_tokens)

    def run(
        self,
        analysis: str = "band-norm",
        prompts: Prompts = "shakespeare",
        layers: Sequence[int] | None = None,
        *,
        max_len: int = MAX_LEN,
        batch_size: int = BATCH_SIZE,
        bos: bool = True,
        count_bos: bool = False,
        max_tokens: int | None = None,
        limit: int | None = None,
        progress: bool = False,
        **options,
    ) -> pd.DataFrame:
        """Run one analysis and return its table (``layers``: None = all; negatives count
        from the end; ``prompts``: see :func:`as_texts`, so a plain string is one text).
        Extra keyword options are the CLI's, with underscores."""
        from rope_lens.analyses.registry import spec
        from rope_lens.request import check_options

        module = importlib.import_module(spec(analysis).module)
        check_options(analysis, options)  # misspelled / inapplicable keywords: one line
        make = self.batches(prompts, max_len, batch_size, bos, count_bos, max_tokens, limit)
        return module.analyze(self.lm, make, check_layers(self.lm, layers), options, progress)

    def summarize(self, analysis: str, df: pd.DataFrame) -> str:
        """The CLI's end-of-run summary for a table from :meth:`run`."""
        return importlib.import_module(ANALYSES[analysis]).summarize(df)

    def qk(
        self,
        prompts: Prompts,
        layers: Sequence[int] | None = None,
        stage: str | Sequence[str] = "pre",
        kinds: Sequence[str] = ("q", "k"),
        *,
        max_len: int = 64,
        bos: bool = True,
        tensors: bool = False,
    ) -> pd.DataFrame | dict[Site, Any]:
        """Queries and keys (and values) of a few short prompts, every vector coordinate.

        Stages (the same sites every analysis reads, on both backends):

        - ``pre``: the vector that RoPE rotates: the ``q_proj`` / ``k_proj`` output split into
          heads, or on QK-norm models (Gemma 3, Qwen 3) the normed vector;
        - ``rot``: after rotation, as the model's attention kernel receives it (before the 1/√d
          scale and before keys are repeated for GQA).

        Values (``kinds=("v",)``) exist only at ``pre``: RoPE never rotates them.

        Args:
            prompts: one text, a list of texts, or a source (see :func:`as_texts`).
            layers: None = all; negatives count from the end.
            stage: ``pre``, ``rot``, or both (``("pre", "rot")``).
            max_len: tokens per prompt (BOS included); longer prompts are truncated.
            bos: prepend BOS when the model has one (position 0, token ``<bos>``-like).
            tensors: return ``{Site: tensor}`` with dims ``[prompt, pos, head, d_head]``
                (right-padded) instead of the DataFrame.

        Returns:
            A tidy DataFrame, one row per coordinate: ``prompt`` (index in ``prompts``),
            ``layer``, ``kind`` (q / k / v), ``stage``, ``head`` (query head for q, KV head
            for k and v), ``pos`` (RoPE position, 0 = BOS), ``token``, ``dim`` (0..d_head-1 in
            the model's own layout: chunk ``c`` of a rotate-half model is dims ``c`` and
            ``c + d_head/2``) and ``value`` (fp32). Padding never appears.
        """
        stages = [stage] if isinstance(stage, str) else list(stage)
        bad = [s for s in stages if s not in STAGES]
        if bad or not stages:
            raise InputError(f"stage must be one of {', '.join(STAGES)} (or both), got {stage!r}")
        bad = [k for k in kinds if k not in ("q", "k", "v")]
        if bad or not kinds:
            raise InputError(f"kinds must be among q, k, v, got {list(kinds)!r}")
        if "v" in kinds and "rot" in stages:
            raise InputError("values are not rotated: ask for v with stage 'pre' only")
        lm = self.lm
        texts = self.texts(prompts)
        seqs = inputs.tokenize(
            lm.tokenizer, texts, lm.bos_token_id, min(max_len, lm.max_context), bos=bos
        )
        has_bos = bos and lm.bos_token_id is not None
        batch = next(inputs.batches(seqs, len(seqs), lm.tokenizer.pad_token_id, has_bos))
        sites = [
            Site(layer, kind, s)
            for layer in check_layers(lm, layers)
            for kind in kinds
            for s in stages
        ]
        got = capture(lm, batch, sites)
        if tensors:
            return got
        frames = []
        for row, ids in enumerate(seqs):
            tokens = lm.tokenizer.convert_ids_to_tokens(list(ids))
            n = len(ids)
            for site in sites:
                x = got[site][row, :n]  # [pos, head, d_head]
                pos_n, head_n, dim_n = x.shape
                idx = pd.MultiIndex.from_product(
                    [range(pos_n), range(head_n), range(dim_n)], names=["pos", "head", "dim"]
                )
                frame = idx.to_frame(index=False)
                frame["value"] = x.reshape(-1).numpy()
                frame["token"] = [tokens[p] for p in frame["pos"]]
                frame = frame.assign(prompt=row, layer=site.layer, kind=site.kind, stage=site.stage)
                frames.append(frame)
        out = pd.concat(frames, ignore_index=True)[QK_COLUMNS]
        return out.astype({"kind": "category", "stage": "category"})


# ---- models brought by the caller ---------------------------------------------------------


def _is_bridge(model: Any) -> bool:
    return type(model).__name__ == "TransformerBridge" and hasattr(model, "original_model")


def _tokenizer_for(model: Any, trust_remote_code: bool) -> Any:
    source = getattr(model.config, "name_or_path", "") or ""
    if not source:
        raise InputError(
            "this model was not loaded from a folder or hub id: pass its tokenizer, "
            "Lens(model, tokenizer)"
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise InputError(
            f"cannot load a tokenizer from {source!r} ({err}); pass it: Lens(model, tokenizer)"
        ) from err


def _from_bridge(bridge: Any, tokenizer: Any, name: str | None) -> LoadedModel:
    """A ``LoadedModel`` around the caller's TransformerLens bridge (``tl`` backend).

    LEAD: this belongs in ``models/load.py`` as ``load_model(name, bridge=bridge)``. The bridge
    has already replaced the model's attention modules, so the native backend's probe cannot
    observe them and booting a second bridge is wrong: the RoPE layout comes from the config
    alone (as on ``tl`` before), and the caller's bridge is used as is.
    """
    from rope_lens.models.rope_config import INV_FREQ_KEY, rope_layout
    from rope_lens.train.encodings import apply_inv_freq

    hf_model = bridge.original_model
    tokenizer = tokenizer if tokenizer is not None else bridge.tokenizer
    if tokenizer is None:
        raise InputError("this bridge has no tokenizer: pass it, Lens(bridge, tokenizer)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    override = getattr(hf_model.config, INV_FREQ_KEY, None)
    if override is not None:
        apply_inv_freq(hf_model, override)
    has_qk_norm = any(n.endswith(("q_norm", "query_norm")) for n, _ in hf_model.named_modules())
    source = str(getattr(hf_model.config, "name_or_path", "") or "")
    label = name or source or "custom"
    folder = Path(source) if source and Path(source).is_dir() else Path(label)
    return LoadedModel(
        name=label,
        folder=folder,
        revision=None,
        hf_model=hf_model.eval(),
        tokenizer=tokenizer,
        bridge=bridge,
        rope=rope_layout(hf_model.config, has_qk_norm),
        device=hf_model.get_input_embeddings().weight.device,
        dtype=next(hf_model.parameters()).dtype,
        backend="tl",
        kernel="eager",
    )
