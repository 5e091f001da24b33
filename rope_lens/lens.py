"""``Lens``: the notebook entry point. One loaded model, any analysis, a DataFrame back.

    from rope_lens import Lens

    lens = Lens("smollm2-135m")
    norms = lens.run("band-norm", prompts="wiki", max_tokens=20_000)
    heads = lens.run("heads", layers=[0, -1])
    parts = lens.run("decompose", texts="It's a truth universally acknowledged",
                     layers=[3], head=2, query_pos="5")
    qk = lens.qk("It's a truth universally acknowledged", layers=[0], stage="rot")

Bring your own model: ``Lens(model, tokenizer)`` takes a transformers causal LM already in
memory (and its tokenizer), ``Lens(bridge)`` a TransformerLens ``TransformerBridge``.

It does what ``rope-lens analyze`` does minus the files: the same analyses
(``rope_lens.analyses.ANALYSES``), the same options (``head``, ``band``, ``ablation``, ``sweep``,
``query_pos``, ...; see ``rope-lens analyze --help``), the same input conventions (BOS prepended
and not counted, right padding, truncation to the window with one warning) and the same checks
(``rope_lens.lens_args``): ``prompts=`` names a source as ``--prompts`` does, ``texts=`` is the
texts themselves. Save a result with
``rope_lens.io.save_table`` or run the CLI when you want the JSON sidecar and resumability.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from rope_lens import inputs
from rope_lens.errors import InputError
from rope_lens.extract import STAGES, Site, capture, check_layers
from rope_lens.inputs import Batch
from rope_lens.lens_args import (
    RUN_KEYWORDS,
    Prompts,
    check_layers_arg,
    check_size,
    check_switch,
    checked_here,
    resolve_texts,
)
from rope_lens.models import load_model
from rope_lens.models.load import LoadedModel
from rope_lens.request import BATCH_SIZE, MAX_LEN

QK_COLUMNS = ["prompt", "layer", "kind", "stage", "head", "pos", "token", "dim", "value"]


@checked_here
def as_texts(
    prompts: Prompts | None = None,
    limit: int | None = None,
    texts: str | Sequence[str] | None = None,
) -> Sequence[str]:
    """What ``prompts`` (a source: ``shakespeare``, ``wiki``, a file) or ``texts`` (the texts
    themselves) stand for, as a list of texts; see :mod:`rope_lens.lens_args`."""
    return resolve_texts(prompts, texts, limit)


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

    @checked_here
    def texts(
        self,
        prompts: Prompts | None = None,
        limit: int | None = None,
        texts: str | Sequence[str] | None = None,
    ) -> Sequence[str]:
        """The texts ``prompts`` or ``texts`` stand for (see :func:`as_texts`)."""
        return as_texts(prompts, limit, texts)

    def tokens(self, text: str, bos: bool = True) -> list[str]:
        """The tokens of one text as readable strings (each id decoded: ``" sure"``, not the
        tokenizer's ``"Ġsure"``), BOS first when the model has one and ``bos``."""
        lm = self.lm
        ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        if bos and lm.bos_token_id is not None:
            ids = [lm.bos_token_id, *ids]
        return inputs.token_texts(lm.tokenizer, ids)

    @checked_here
    def batches(
        self,
        prompts: Prompts | None = None,
        max_len: int = MAX_LEN,
        batch_size: int = BATCH_SIZE,
        bos: bool = True,
        count_bos: bool = False,
        max_tokens: int | None = None,
        limit: int | None = None,
        *,
        texts: str | Sequence[str] | None = None,
    ) -> Callable[[], Iterator[Batch]]:
        """A factory of fresh batch iterators (analyses with two passes call it twice)."""
        lm = self.lm
        chosen = self.texts(prompts, limit, texts)
        max_len, batch_size = check_size("max_len", max_len), check_size("batch_size", batch_size)
        max_tokens = check_size("max_tokens", max_tokens)
        bos, count_bos = check_switch("bos", bos), check_switch("count_bos", count_bos)
        seqs = inputs.tokenize(
            lm.tokenizer,
            chosen,
            lm.bos_token_id,
            min(max_len, lm.max_context),
            bos=bos,
            max_tokens=max_tokens,
            count_bos=count_bos,
        )
        has_bos = bos and lm.bos_token_id is not None
        pad = lm.tokenizer.pad_token_id
        return inputs.batch_factory(seqs, batch_size, pad, has_bos, count_bos, max_tokens)

    @checked_here
    def run(
        self,
        analysis: str = "band-norm",
        prompts: Prompts | None = None,
        layers: Sequence[int] | str | None = None,
        *,
        texts: str | Sequence[str] | None = None,
        max_len: int = MAX_LEN,
        batch_size: int = BATCH_SIZE,
        bos: bool = True,
        count_bos: bool = False,
        max_tokens: int | None = None,
        limit: int | None = None,
        progress: bool = False,
        **options,
    ) -> pd.DataFrame:
        """Run one analysis and return its table.

        Args:
            prompts: a source, as ``--prompts``: ``shakespeare`` (default), ``wiki``, a file;
                or a list of texts. A string that names no source is refused.
            texts: the texts themselves (one string or a list), instead of ``prompts``.
            layers: None = all; negatives count from the end; or the CLI's ``"0,5-7,-1"``.
            **options: the CLI's analysis options, with underscores (``head``, ``band``,
                ``sweep_points``, ...), checked as the CLI checks them.
        """
        from rope_lens.request import check_options

        module = importlib.import_module(_spec(analysis).module)
        # misspelled / inapplicable keywords, wrong types, values below the minimum: one line
        options = check_options(analysis, options, also=RUN_KEYWORDS, keywords=True)
        wanted = check_layers_arg(layers)
        progress = check_switch("progress", progress)
        make = self.batches(
            prompts, max_len, batch_size, bos, count_bos, max_tokens, limit, texts=texts
        )
        return module.analyze(self.lm, make, check_layers(self.lm, wanted), options, progress)

    @checked_here
    def show_head(
        self,
        layer: int,
        head: int,
        texts: str | None = None,
        *,
        query_pos: int | None = None,
        corpus: pd.DataFrame | None = None,
        band_norm: pd.DataFrame | None = None,
        max_len: int = 64,
    ):
        """The head explorer for one head: its attention pattern on a prompt (circuitsvis),
        its q and k spectra, its diag / prev / sink scores and class, the per-frequency
        decomposition of one query's logits (``query_pos``, default the last) and its
        rotation-ablation effect. Shown inline in Jupyter (an offline page); ``.save(path)``,
        ``.figures``.

        Args:
            texts: the prompt (default: the report's short prompt with three apostrophes).
            corpus: a heads table (``lens.run("heads")``) for corpus-level scores and class.
            band_norm: a band-norm table for the corpus-level spectra beside the prompt's.
        """
        from rope_lens.analyses.head_explorer import explore
        from rope_lens.analyses.head_options import check_head
        from rope_lens.request import APOSTROPHE_PROMPT
        from rope_lens.viz.head_page import HeadPage, head_view

        lm = self.lm
        (layer_index,) = check_layers(lm, check_layers_arg([layer]))
        head_index = check_head(lm, head)
        assert head_index is not None
        batch = next(iter(self.batches(texts=texts or APOSTROPHE_PROMPT, max_len=max_len)()))
        table = explore(lm, batch, [layer_index], [head_index], query_pos)
        view = head_view(table, layer_index, head_index, corpus, band_norm)
        return HeadPage(view, {"model": lm.name, "weights": lm.provenance})

    def summarize(self, analysis: str, df: pd.DataFrame) -> str:
        """The CLI's end-of-run summary for a table from :meth:`run`."""
        return importlib.import_module(_spec(analysis).module).summarize(df)

    @checked_here
    def qk(
        self,
        texts: str | Sequence[str] | None = None,
        layers: Sequence[int] | str | None = None,
        stage: str | Sequence[str] = "pre",
        kinds: Sequence[str] = ("q", "k"),
        *,
        prompts: Prompts | None = None,
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
            texts: one text or a list of texts (the texts themselves).
            layers: None = all; negatives count from the end.
            stage: ``pre``, ``rot``, or both (``("pre", "rot")``).
            max_len: tokens per prompt (BOS included); longer prompts are truncated.
            bos: prepend BOS when the model has one (position 0, token ``<bos>``-like).
            tensors: return ``{Site: tensor}`` with dims ``[prompt, pos, head, d_head]``
                (right-padded) instead of the DataFrame.
            prompts: a source instead of ``texts`` (``shakespeare``, a file; see
                :func:`as_texts`).

        Returns:
            A tidy DataFrame, one row per coordinate: ``prompt`` (index in ``prompts``),
            ``layer``, ``kind`` (q / k / v), ``stage``, ``head`` (query head for q, KV head
            for k and v), ``pos`` (RoPE position, 0 = BOS), ``token`` (its text, decoded:
            ``" sure"``, not ``"Ġsure"``), ``dim`` (0..d_head-1 in
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
        if texts is None and prompts is None:
            raise InputError("give the texts to read: lens.qk('some text') or lens.qk([...])")
        chosen = self.texts(prompts, None, texts)
        max_len, bos = check_size("max_len", max_len), check_switch("bos", bos)
        seqs = inputs.tokenize(
            lm.tokenizer, chosen, lm.bos_token_id, min(max_len, lm.max_context), bos=bos
        )
        has_bos = bos and lm.bos_token_id is not None
        batch = next(inputs.batches(seqs, len(seqs), lm.tokenizer.pad_token_id, has_bos))
        sites = [
            Site(layer, kind, s)
            for layer in check_layers(lm, check_layers_arg(layers))
            for kind in kinds
            for s in stages
        ]
        got = capture(lm, batch, sites)
        if tensors:
            return got
        frames = []
        for row, ids in enumerate(seqs):
            tokens = inputs.token_texts(lm.tokenizer, ids)
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


def _spec(analysis: Any):
    from rope_lens.analyses.registry import spec

    if not isinstance(analysis, str):
        raise InputError(
            f"the analysis is a name such as 'heads', got {type(analysis).__name__} {analysis!r}"
        )
    return spec(analysis)  # unknown names: one line with the nearest name


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
