"""A model's RoPE layout per layer: measured (``rope_lens.engine.probe``), checked against
its HF config.

The measurement is the source: which layers call softmax attention, which of them rotate
(NoPE layers do not, whatever the config's ``rope_parameters`` say), their pairing, rotary
dims, window and chunk. The config is the cross-check: where transformers' rope rules give
frequencies for a layer (``config.rope_parameters``, per layer type for Gemma 3/4) and they
agree with the measurement within its resolution, the exact fp64 ones are used (never
TransformerLens' ``cfg.rotary_base``, which reads 10000 whatever the checkpoint says); else the
cos / sin the layer's module is handed, where they agree; else the measured ones, with a
warning and a note in the sidecar.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from rope_lens.engine.probe import Probe, ProbedLayer
from rope_lens.errors import CheckpointError
from rope_lens.models.attention_fields import check_fields
from rope_lens.rope import RopeError, RopeSpec, spec_from_rope_parameters
from rope_lens.types import Pairing

log = logging.getLogger(__name__)

# Architectures whose HF implementation pairs adjacent dims (2k, 2k+1). Everything else in
# transformers (Llama, Gemma 1-3, Qwen, Mistral, Phi-3, OLMo, GPT-NeoX) uses rotate-half.
# Only a tie-break for the probe (a layer where too few chunks turn to tell) and the layout of
# a caller's TransformerLens bridge, which is not measured.
INTERLEAVED_MODEL_TYPES = frozenset(
    {"cohere", "cohere2", "glm", "glm4", "chatglm", "gptj", "llama4_text", "helium", "ernie4_5"}
)

# Training checkpoints written by rope_lens.train store their exact frequency vector here,
# because NoPE / reversed / partial encodings are not expressible as an HF rope_type.
INV_FREQ_KEY = "rope_lens_inv_freq"


@dataclass(frozen=True)
class RopeLayout:
    """RoPE facts about a whole model, per layer.

    Attributes:
        layer_specs: one RopeSpec per decoder layer (a layer that does not rotate has every
            frequency 0; a layer without softmax attention has a placeholder, never analysed:
            see ``attention_layers``).
        layer_types: per layer, e.g. "full_attention" / "sliding_attention"; a layer measured
            not to rotate gets ``_nope`` appended ("full_attention_nope"); a layer without
            softmax attention keeps its config type ("linear_attention", "conv").
        qk_norm: True when q and k are RMS-normed before rotation (Gemma 3, Qwen 3, OLMo 2):
            the rotated vector is then the normed one, not the projection output.
        head_dim, n_heads, n_kv_heads, n_layers: shapes (of the first attention layer).
        layer_kv_heads: KV heads of every layer as the model computes them (Gemma 4's full
            layers may have fewer than its sliding ones); empty when not probed. Each layer's
            head size is its spec's ``head_dim``.
        layer_windows, layer_chunks: the sliding window / attention chunk each layer's
            attention call was seen to apply (None: none seen).
        attention_layers: the layers that call softmax attention (every table's layers);
            ``skipped``: the others, with their kind (from the config's layer types).
        layer_facts: per attention layer, what was measured (JSON-friendly, for sidecars).
    """

    layer_specs: tuple[RopeSpec, ...]
    layer_types: tuple[str, ...]
    qk_norm: bool
    head_dim: int
    n_heads: int
    n_kv_heads: int
    n_layers: int
    layer_kv_heads: tuple[int, ...] = ()
    layer_windows: tuple[int | None, ...] = ()
    layer_chunks: tuple[int | None, ...] = ()
    attention_layers: tuple[int, ...] = ()
    skipped: Mapping[int, str] = dataclasses.field(default_factory=dict)
    layer_facts: Mapping[int, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.attention_layers:
            object.__setattr__(self, "attention_layers", tuple(range(self.n_layers)))

    def window(self, layer: int) -> int | None:
        """The sliding window ``layer`` attends within (None: full causal attention), as its
        attention call received it; from the layer type and config when not probed."""
        return self.layer_windows[layer] if self.layer_windows else None

    def chunk(self, layer: int) -> int | None:
        """The attention chunk ``layer`` attends within (Llama 4), None when it has none."""
        return self.layer_chunks[layer] if self.layer_chunks else None

    def kv_heads(self, layer: int) -> int:
        """KV heads of ``layer``."""
        return self.layer_kv_heads[layer] if self.layer_kv_heads else self.n_kv_heads

    def group(self, layer: int) -> int:
        """Query heads per KV head in ``layer`` (query head h reads KV head h // group)."""
        return self.n_heads // self.kv_heads(layer)

    def n_chunks(self, layer: int) -> int:
        """Frequency chunks (dim pairs) of ``layer``'s heads."""
        return self.layer_specs[layer].head_dim // 2

    def rotates(self, layer: int) -> bool:
        """Whether ``layer`` turns any chunk (False for NoPE layers)."""
        return bool((self.layer_specs[layer].frequencies() > 0).any())

    def describe(self) -> dict[str, Any]:
        by_type: dict[str, Any] = {}
        for layer in self.attention_layers:
            kind = self.layer_types[layer]
            by_type.setdefault(kind, self.layer_specs[layer].describe())
        return {
            "per_layer_type": by_type,
            "layer_types": list(self.layer_types),
            "qk_norm_before_rotation": self.qk_norm,
            "vector_convention": VECTOR_CONVENTION,
            "head_dim": self.head_dim,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "n_layers": self.n_layers,
            **(
                {"kv_heads_per_layer": list(self.layer_kv_heads)}
                if len(set(self.layer_kv_heads)) > 1
                else {}
            ),
            **(
                {
                    "attention_layers": list(self.attention_layers),
                    "layers_without_attention": {str(i): k for i, k in self.skipped.items()},
                }
                if self.skipped
                else {}
            ),
            **(
                {"measured": {str(i): dict(f) for i, f in self.layer_facts.items()}}
                if self.layer_facts
                else {}
            ),
        }


VECTOR_CONVENTION = (
    "post-rotation: q/k exactly as each layer's attention kernel receives them (after RoPE and "
    "after any norm or scale the model applies after it); pre-rotation: those vectors "
    "un-rotated with the layer's frequencies and divided by its attention_scaling (for a "
    "QK-norm before RoPE, the normed vector; for a norm over the head after RoPE, the normed "
    "vector too: such a norm commutes with the rotation). Band norms, head scores and "
    "decompositions use these vectors; a layer with frequency 0 everywhere (NoPE) is not "
    "rotated, so its two views are the same vector"
)


def _text_config(config: Any) -> Any:
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def pairing_for(config: Any) -> Pairing:
    return "interleaved" if _text_config(config).model_type in INTERLEAVED_MODEL_TYPES else "half"


def _config_attr(cfg: Any, name: str, default: Any = None) -> Any:
    """A config attribute, or ``default`` when missing or ambiguous (per-layer configs such
    as Gemma 4's raise on global reads of a heterogeneous attribute)."""
    try:
        value = getattr(cfg, name, default)
    except Exception:  # transformers' AmbiguousGlobalPerLayerAttributeError and kin
        return default
    return default if value is None else value


def _config_spec(
    cfg: Any, layer_params: Mapping[str, Any] | None, head_dim: int, pairing: Pairing
) -> RopeSpec | None:
    """The spec transformers' rope rules give for ``layer_params`` (None if they cannot)."""
    override = getattr(cfg, INV_FREQ_KEY, None)
    if override is not None:
        return RopeSpec(
            head_dim=head_dim,
            inv_freq=torch.tensor(override, dtype=torch.float64),
            pairing=pairing,
            rope_type=str(getattr(cfg, "rope_lens_encoding", "rope_lens")),
            theta=float((layer_params or {}).get("rope_theta", 10_000.0)),
        )
    if layer_params is None:
        return None
    try:
        return spec_from_rope_parameters(
            layer_params,
            head_dim,
            pairing,
            max_position_embeddings=_config_attr(cfg, "max_position_embeddings"),
        )
    except (RopeError, KeyError, TypeError, ValueError):
        return None


def _layer_params(params: Any, kind: str) -> Mapping[str, Any] | None:
    if not isinstance(params, Mapping):
        return None
    # Gemma 3/4 style: {"sliding_attention": {...}, "full_attention": {...}}
    return params[kind] if kind in params else params


def check_supported(config: Any) -> None:
    """Refuse, with one line, attention layouts that have no one rotated key per head."""
    cfg = _text_config(config)
    if _config_attr(cfg, "kv_lora_rank") or _config_attr(cfg, "qk_rope_head_dim"):
        raise RopeError(
            f"{cfg.model_type}: multi-head latent attention (MLA) is not supported: its keys "
            "are rebuilt from a low-rank latent plus a separate rotary part, so there is no "
            "single rotated key per head to analyse"
        )
    # Gemma 3 spells it True (EmbeddingGemma), Gemma 4 "all" ("vision" is text-causal).
    bidirectional = _config_attr(cfg, "use_bidirectional_attention", None) in (True, "all")
    if bidirectional or getattr(cfg, "is_causal", True) is False:
        # Every analysis reads causal attention (head scores' log-sum-exp, the loss); a
        # bidirectional encoder would give tables that look right and are not.
        raise RopeError(
            f"{cfg.model_type}: bidirectional attention is not supported (rope-lens analyses "
            "causal language models); load the causal variant of this model"
        )
    if getattr(cfg, "qk_norm_after_rope", False):
        # HunYuan-style: the norm follows the rotation, so the vector we would label
        # "pre-rotation" is not the one that was rotated. Refuse rather than mislabel.
        raise RopeError(
            f"{cfg.model_type}: QK-norm after RoPE is not supported (its pre-rotation vectors "
            "are not the ones the model rotates)"
        )
    check_fields(cfg)


def probe_limit(config: Any) -> int:
    """Positions the layout probe may use: below the model's context and below any
    ``original_max_position_embeddings`` (past it LongRoPE / dynamic NTK change frequencies
    and Llama-4-style scalings start), so the probe sees the regime the analyses read."""
    cfg = _text_config(config)
    limit = int(_config_attr(cfg, "max_position_embeddings", 0) or 2048)
    params = _config_attr(cfg, "rope_parameters") or {}
    candidates = [params, *(v for v in params.values() if isinstance(v, Mapping))]
    candidates.append(
        {"original_max_position_embeddings": _config_attr(cfg, "original_max_position_embeddings")}
    )
    for entry in candidates:
        if isinstance(entry, Mapping) and entry.get("original_max_position_embeddings"):
            limit = min(limit, int(entry["original_max_position_embeddings"]))
    return limit


def rope_layout(
    config: Any, has_qk_norm: bool, probed: Probe | None = None, check_config: bool = True
) -> RopeLayout:
    """Per-layer RopeSpecs of a model.

    With ``probed`` (what :func:`rope_lens.engine.probe.probe` measured), every attention
    layer's rotation, pairing, shapes, window and chunk come from the model's behaviour; the
    config is a cross-check: its exact fp64 frequencies (transformers' rope rules) are used
    where they agree with the measurement within its resolution, else the ones the layer's
    module is handed (cos / sin, fp32) where those agree, else the measured ones (a warning
    and the sidecar say so). Layers measured not to rotate are NoPE whatever the config says.
    Without ``probed`` (a TransformerLens bridge given by the caller), the config alone
    decides. ``check_config=False`` ignores the config's frequencies (after editing rotary
    buffers by hand).
    """
    check_supported(config)
    cfg = _text_config(config)
    if hasattr(cfg, "standardize_rope_params") and _config_attr(cfg, "rope_parameters"):
        try:
            cfg.standardize_rope_params()
        except Exception:  # per-layer configs standardise themselves
            pass
    n_layers = int(cfg.num_hidden_layers)
    config_types = tuple(_config_attr(cfg, "layer_types", None) or ())
    layer_types = list(config_types or ["full_attention"] * n_layers)
    params = _config_attr(cfg, "rope_parameters")
    if probed is None:
        return _config_layout(cfg, has_qk_norm, tuple(layer_types), params)
    skipped = _skipped_layers(cfg, probed, config_types)
    attention = tuple(sorted(probed.layers))
    first = probed.layers[attention[0]]
    pairing: Pairing = probed.pairing or pairing_for(cfg)
    specs: list[RopeSpec] = []
    facts: dict[int, dict[str, Any]] = {}
    for layer in range(n_layers):
        seen = probed.layers.get(layer)
        if seen is None:
            specs.append(_placeholder(first.head_dim, pairing, skipped[layer]))
            continue
        kind = layer_types[layer]
        layer_params = _layer_params(params, kind)
        spec, note = _layer_spec(
            cfg, seen, layer_params, pairing, probed.tol, check_config, probed.dtype
        )
        if seen.rotation is None:
            layer_types[layer] = f"{kind}_nope"
        elif note.startswith(("differs", "agrees, rounded")):
            log.warning("layer %d: %s", layer, note)
        specs.append(dataclasses.replace(spec, valid_positions=_static_up_to(cfg, layer_params)))
        facts[layer] = _facts(seen, spec, note)
    return RopeLayout(
        layer_specs=tuple(specs),
        layer_types=tuple(layer_types),
        qk_norm=has_qk_norm,
        head_dim=first.head_dim,
        n_heads=first.n_heads,
        n_kv_heads=first.n_kv_heads,
        n_layers=n_layers,
        layer_kv_heads=tuple(
            probed.layers[i].n_kv_heads if i in probed.layers else first.n_kv_heads
            for i in range(n_layers)
        ),
        layer_windows=tuple(
            probed.layers[i].window if i in probed.layers else None for i in range(n_layers)
        ),
        layer_chunks=tuple(
            _declared_chunk(cfg, layer_types[i], probed.layers[i].chunk)
            if i in probed.layers
            else None
            for i in range(n_layers)
        ),
        attention_layers=attention,
        skipped=skipped,
        layer_facts=facts,
    )


def _config_layout(
    cfg: Any, has_qk_norm: bool, layer_types: tuple[str, ...], params: Any
) -> RopeLayout:
    """The layout from the config alone (no model to measure: a caller's bridge)."""
    n_layers = int(cfg.num_hidden_layers)
    n_heads = int(_config_attr(cfg, "num_attention_heads"))
    n_kv_heads = int(_config_attr(cfg, "num_key_value_heads", n_heads))
    head_dim = int(_config_attr(cfg, "head_dim", 0) or cfg.hidden_size // n_heads)
    specs = []
    for layer in range(n_layers):
        layer_params = _layer_params(params, layer_types[layer])
        spec = _config_spec(cfg, layer_params, head_dim, pairing_for(cfg))
        if spec is None:
            raise CheckpointError(
                f"{cfg.model_type}: cannot read the RoPE frequencies of layer {layer} from its "
                "config (no rope_parameters) and there is no model to measure them from"
            )
        specs.append(dataclasses.replace(spec, valid_positions=_static_up_to(cfg, layer_params)))
    return RopeLayout(
        layer_specs=tuple(specs),
        layer_types=layer_types,
        qk_norm=has_qk_norm,
        head_dim=head_dim,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        n_layers=n_layers,
    )


def _skipped_layers(cfg: Any, probed: Probe, config_types: tuple[str, ...]) -> dict[int, str]:
    """The layers that never called softmax attention, with their kind; a layer the config
    calls attention (or names no type for) is refused: it computes attention another way."""
    out = {}
    for layer in probed.skipped:
        kind = config_types[layer] if layer < len(config_types) else None
        if kind is None or ("attention" in kind and "linear" not in kind):
            said = f"a {kind} layer in its config" if kind else "its config names no layer type"
            raise CheckpointError(
                f"{cfg.model_type}: layer {layer} ({said}) never called transformers' "
                "attention interface: it computes attention its own way, so the native "
                "engine cannot see its queries and keys; try --backend tl"
            )
        out[layer] = str(kind)
    return out


def _placeholder(head_dim: int, pairing: Pairing, kind: str) -> RopeSpec:
    """The spec of a layer without softmax attention: never analysed (not in any table)."""
    return RopeSpec(
        head_dim=head_dim,
        inv_freq=torch.zeros(0, dtype=torch.float64),
        pairing=pairing,
        rope_type="none",
        theta=0.0,
        extra={"layer_kind": kind, "attention": "none (not analysed)"},
    )


def _declared_chunk(cfg: Any, layer_type: str, seen: int | None) -> int | None:
    """The chunk a chunked-attention layer attends within: what its mask showed the probe,
    else the config's ``attention_chunk_size`` for layers of type ``chunked_attention`` (a
    chunk longer than the probe cannot show; every call checks its mask against it)."""
    if seen is not None:
        return seen
    if layer_type.startswith("chunked_attention"):
        size = _config_attr(cfg, "attention_chunk_size")
        return int(size) if size else None
    return None


def _layer_spec(
    cfg: Any,
    seen: ProbedLayer,
    layer_params: Mapping[str, Any] | None,
    pairing: Pairing,
    tol: float,
    check_config: bool,
    dtype: str = "float32",
) -> tuple[RopeSpec, str]:
    """One attention layer's spec, and how its config compared ("agrees", "agrees, rounded
    to ...", "differs: ...", "no frequencies in the config", "not checked")."""
    d = seen.head_dim
    rotation = seen.rotation
    rope_type = str((layer_params or {}).get("rope_type", "default"))
    theta = float((layer_params or {}).get("rope_theta", 10_000.0))
    if rotation is None:
        from_config = _config_spec(cfg, layer_params, d, pairing) if check_config else None
        if from_config is not None and not bool((from_config.frequencies() > 0).any()):
            return from_config, "agrees"  # a rope-lens checkpoint that declares NoPE
        spec = RopeSpec(
            head_dim=d,
            inv_freq=torch.zeros(0, dtype=torch.float64),
            pairing=pairing,
            rope_type="none",
            theta=0.0,
            extra={"read_from": "the model's rotation: no dim turns (NoPE)"},
        )
        if from_config is None:
            return spec, "no frequencies in the config"
        return spec, "NoPE: the config's rope_parameters do not apply to this layer"
    scaling = seen.attention_scaling if seen.attention_scaling is not None else 1.0
    measured = RopeSpec(
        head_dim=d,
        inv_freq=rotation.turning_freq()[: rotation.rotary_dim // 2],
        pairing=rotation.pairing,
        attention_scaling=scaling,
        rope_type=rope_type,
        theta=theta,
        clockwise=rotation.clockwise,
        extra={"read_from": "the model's rotation (shifted positions)"},
    )
    candidates: list[tuple[str, RopeSpec | None]] = []
    if check_config:
        from_config = _config_spec(cfg, layer_params, d, rotation.pairing)
        candidates.append(("config", from_config))
        if from_config is not None and dtype in ("bfloat16", "float16"):
            # A model cast with .to(bfloat16) casts its inv_freq buffer too, and rotates with
            # the config's frequencies rounded to that dtype: exactly those, then.
            rounded = from_config.inv_freq.to(getattr(torch, dtype)).double()
            extra = {**from_config.extra, "inv_freq_dtype": dtype}
            candidates.append(
                ("rounded", dataclasses.replace(from_config, inv_freq=rounded, extra=extra))
            )
    handed = seen.handed_freq
    if handed is not None and 2 * len(handed) <= d:
        candidates.append(
            (
                "handed",
                dataclasses.replace(
                    measured,
                    inv_freq=handed,
                    extra={"read_from": "the cos / sin its attention module is handed"},
                ),
            )
        )
    reasons = []
    for source, candidate in candidates:
        if candidate is None:
            continue
        candidate = dataclasses.replace(candidate, clockwise=rotation.clockwise)
        why = _disagreement(candidate, rotation, scaling, tol)
        if why is None:
            note = {
                "config": "agrees",
                "rounded": f"agrees, rounded to {dtype} as the model's own inv_freq buffer is",
            }.get(source, "no frequencies in the config")
            if source == "handed" and reasons:
                note = f"differs: {reasons[0]}"
            return candidate, note
        if source != "rounded":
            reasons.append(f"{source} {why}")
    if not check_config:
        return measured, "not checked"
    return measured, (f"differs: {reasons[0]}" if reasons else "no frequencies in the config")


def _disagreement(candidate: RopeSpec, rotation: Any, scaling: float, tol: float) -> str | None:
    """Why ``candidate`` is not the measured rotation (None: it is, within the measurement's
    resolution)."""
    from rope_lens.rope import chunk_dims

    d = candidate.head_dim
    ours = chunk_dims(d, candidate.rotary_dim, candidate.pairing)
    theirs = chunk_dims(d, rotation.rotary_dim, rotation.pairing)
    if candidate.pairing != rotation.pairing or not torch.equal(ours, theirs):
        return (
            f"pairs dims as {candidate.pairing} over {candidate.rotary_dim} dims, the model as "
            f"{rotation.pairing} over {rotation.rotary_dim}"
        )
    want, got, sigma = candidate.frequencies(), rotation.freq, rotation.sigma
    slack = 6 * sigma + 1e-9 + 1e-6 * want.abs()
    off = (got - want).abs() > slack
    if bool(off.any()):
        chunk = int(torch.nonzero(off)[0, 0])
        return (
            f"gives chunk {chunk} {float(want[chunk]):.6g} rad/token, the model turns it by "
            f"{float(got[chunk]):.6g} +- {float(sigma[chunk]):.1g}"
        )
    if abs(candidate.attention_scaling - scaling) > 10 * tol * max(1.0, scaling):
        return f"gives attention scaling {candidate.attention_scaling:.6g}, the model {scaling:.6g}"
    return None


def _facts(seen: ProbedLayer, spec: RopeSpec, note: str) -> dict[str, Any]:
    """What was measured in one attention layer, for the sidecar."""
    freq = spec.frequencies()
    n_turning = int((freq > 0).sum())
    encoding = "nope" if n_turning == 0 else ("rope" if n_turning == len(freq) else "partial")
    rotation = seen.rotation
    out: dict[str, Any] = {
        "encoding": encoding,
        "turning_chunks": n_turning,
        "config": note,
    }
    if rotation is not None:
        known = rotation.sigma[torch.isfinite(rotation.sigma)]
        out["frequency_resolution"] = float(known.max()) if len(known) else None
        out["fit_residual"] = float(rotation.residual)
        if len(known) < len(rotation.sigma):
            out["chunks_zero_in_every_vector"] = int(len(rotation.sigma) - len(known))
    if seen.window:
        out["window"] = seen.window
    if seen.chunk:
        out["chunk"] = seen.chunk
    if seen.sinks:
        out["learned_sinks"] = True
    if seen.softcap:
        out["softcap"] = float(seen.softcap)
    normed = [k for k, v in seen.normed.items() if v is not None]
    if normed:
        out["normed_over_head"] = {k: round(float(seen.normed[k] or 0), 6) for k in normed}
    scaled = {k: round(v.factor, 6) for k, v in seen.index_scale.items() if v.kind == "scaled"}
    if scaled:
        out["scaled_by_token_index"] = scaled
    unmeasured = [k for k, v in seen.index_scale.items() if v.kind == "not measured"]
    if unmeasured:
        out["index_scale_not_measured"] = unmeasured
    return out


def _static_up_to(cfg: Any, layer_params: Mapping[str, Any] | None) -> int | None:
    """Sequence length past which the model's frequencies change at run time (LongRoPE's long
    factors, dynamic NTK's larger base), as transformers decides it; None for static rules."""
    rope_type = str((layer_params or {}).get("rope_type", "default"))
    if rope_type not in ("longrope", "dynamic"):
        return None
    original = (layer_params or {}).get("original_max_position_embeddings") or _config_attr(
        cfg, "original_max_position_embeddings"
    )
    return int(original or _config_attr(cfg, "max_position_embeddings") or 0) or None
