"""Read a model's true RoPE parameters from its own HF config, per layer.

Never from defaults: TransformerLens' ``cfg.rotary_base`` reads 10000 for HF-backed models
whatever the checkpoint says (SmolLM2 uses 1e5, Qwen2 1e6, Llama 3.1 5e5 + llama3 scaling).
We take ``config.rope_parameters`` (per layer type for Gemma 3/4), compute frequencies with
``rope_lens.rope`` and use them only where they agree with the model's own rotation as read by
``rope_lens.engine.probe`` at load time; configs the rope rules cannot read use the probed
frequencies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from rope_lens.engine.probe import Probe
from rope_lens.errors import CheckpointError
from rope_lens.rope import RopeError, RopeSpec, spec_from_rope_parameters
from rope_lens.types import Pairing

# Architectures whose HF implementation pairs adjacent dims (2k, 2k+1). Everything else in
# transformers (Llama, Gemma 1-3, Qwen, Mistral, Phi-3, OLMo, GPT-NeoX) uses rotate-half.
INTERLEAVED_MODEL_TYPES = frozenset({"cohere", "cohere2", "glm", "glm4", "chatglm", "gptj"})

# Training checkpoints written by rope_lens.train store their exact frequency vector here,
# because NoPE / reversed / partial encodings are not expressible as an HF rope_type.
INV_FREQ_KEY = "rope_lens_inv_freq"


@dataclass(frozen=True)
class RopeLayout:
    """RoPE facts about a whole model.

    Attributes:
        layer_specs: one RopeSpec per decoder layer.
        layer_types: per layer, e.g. "full_attention" / "sliding_attention".
        qk_norm: True when q and k are RMS-normed before rotation (Gemma 3, Qwen 3, OLMo 2):
            the rotated vector is then the normed one, not the projection output.
        head_dim, n_heads, n_kv_heads, n_layers: shapes (of layer 0, where layers differ).
        layer_kv_heads: KV heads of every layer as the model computes them (Gemma 4's full
            layers may have fewer than its sliding ones); empty when not probed. Each layer's
            head size is its spec's ``head_dim``.
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

    def window(self, layer: int) -> int | None:
        """The sliding window ``layer`` attends within (None: full causal attention), as its
        attention call received it; from the layer type and config when not probed."""
        return self.layer_windows[layer] if self.layer_windows else None

    def kv_heads(self, layer: int) -> int:
        """KV heads of ``layer``."""
        return self.layer_kv_heads[layer] if self.layer_kv_heads else self.n_kv_heads

    def group(self, layer: int) -> int:
        """Query heads per KV head in ``layer`` (query head h reads KV head h // group)."""
        return self.n_heads // self.kv_heads(layer)

    def n_chunks(self, layer: int) -> int:
        """Frequency chunks (dim pairs) of ``layer``'s heads."""
        return self.layer_specs[layer].head_dim // 2

    def describe(self) -> dict[str, Any]:
        by_type: dict[str, Any] = {}
        for spec, kind in zip(self.layer_specs, self.layer_types):
            by_type.setdefault(kind, spec.describe())
        return {
            "per_layer_type": by_type,
            "layer_types": list(self.layer_types),
            "qk_norm_before_rotation": self.qk_norm,
            "vector_convention": (
                "pre-rotation: q/k as the model has them just before RoPE (QK-normed where "
                "the model norms); post-rotation vectors are these rotated and multiplied by "
                "each layer type's attention_scaling"
            ),
            "head_dim": self.head_dim,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "n_layers": self.n_layers,
            **(
                {"kv_heads_per_layer": list(self.layer_kv_heads)}
                if len(set(self.layer_kv_heads)) > 1
                else {}
            ),
        }


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


def rope_layout(
    config: Any, has_qk_norm: bool, probed: Probe | None = None, check_config: bool = True
) -> RopeLayout:
    """Per-layer RopeSpecs of a model.

    With ``probed`` (what :func:`rope_lens.engine.probe.probe` read from the model's own
    rotation), every layer's frequencies, attention scaling, pairing and shapes come from the
    model itself, and the config-derived spec (exact fp64 frequencies from transformers' rope
    rules) is used only where it agrees with them: a disagreement is an error, never a silent
    choice. Configs our rope rules cannot read (Gemma 4's per-layer configs, GPT-J's
    ``rotary_dim``) are analysed with the probed frequencies. Without ``probed`` (the
    TransformerLens backend), the config alone decides. ``check_config=False`` takes the
    model's rotation as it is now, ignoring the config (after editing rotary buffers by hand).
    """
    check_supported(config)
    cfg = _text_config(config)
    if hasattr(cfg, "standardize_rope_params") and _config_attr(cfg, "rope_parameters"):
        try:
            cfg.standardize_rope_params()
        except Exception:  # per-layer configs standardise themselves
            pass
    n_layers = int(cfg.num_hidden_layers)
    n_heads = int(_config_attr(cfg, "num_attention_heads"))
    n_kv_heads = int(_config_attr(cfg, "num_key_value_heads", n_heads))
    head_dim = int(_config_attr(cfg, "head_dim", 0) or cfg.hidden_size // n_heads)
    pairing: Pairing = pairing_for(cfg)
    if probed is not None:
        first = probed.layers[0]
        n_heads, n_kv_heads, head_dim = first.n_heads, first.n_kv_heads, first.head_dim
        if probed.pairing is not None:
            pairing = probed.pairing
    layer_types = tuple(_config_attr(cfg, "layer_types", None) or ["full_attention"] * n_layers)
    params = _config_attr(cfg, "rope_parameters")
    specs = []
    for layer in range(n_layers):
        kind = layer_types[layer]
        seen = probed.layers.get(layer) if probed is not None else None
        dim = seen.head_dim if seen is not None else head_dim
        layer_params = _layer_params(params, kind)
        from_config = _config_spec(cfg, layer_params, dim, pairing)
        if seen is None or seen.inv_freq is None:
            if from_config is None:
                raise CheckpointError(
                    f"{cfg.model_type}: cannot read the RoPE frequencies of layer {layer} "
                    "(no rope_parameters in the config, and the model hands its attention no "
                    "position_embeddings): not a RoPE model this tool can analyse"
                )
            specs.append(from_config)
            continue
        from_model = RopeSpec(
            head_dim=dim,
            inv_freq=seen.inv_freq,
            pairing=pairing,
            attention_scaling=seen.attention_scaling,
            rope_type=str((layer_params or {}).get("rope_type", "default")),
            theta=float((layer_params or {}).get("rope_theta", 10_000.0)),
            extra={"read_from": "the model's rotation"},
        )
        if from_config is None or not check_config:
            specs.append(from_model)
            continue
        _check_agree(from_config, from_model, kind, layer)
        specs.append(from_config)
    specs = [  # LongRoPE / dynamic NTK: these frequencies hold up to the original length
        dataclasses.replace(spec, valid_positions=_static_up_to(cfg, _layer_params(params, kind)))
        for spec, kind in zip(specs, layer_types)
    ]
    return RopeLayout(
        layer_specs=tuple(specs),
        layer_types=layer_types,
        qk_norm=has_qk_norm,
        head_dim=head_dim,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        n_layers=n_layers,
        layer_kv_heads=(
            tuple(
                probed.layers[i].n_kv_heads if i in probed.layers else n_kv_heads
                for i in range(n_layers)
            )
            if probed is not None
            else ()
        ),
        layer_windows=(
            tuple(probed.layers[i].window if i in probed.layers else None for i in range(n_layers))
            if probed is not None
            else ()
        ),
    )


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


def _check_agree(config: RopeSpec, model: RopeSpec, kind: str, layer: int) -> None:
    """The config-derived frequencies must be the ones the model rotates with."""
    ours, theirs = config.frequencies(), model.frequencies()
    same = len(ours) == len(theirs) and torch.allclose(ours, theirs, rtol=1e-4, atol=2e-6)
    if not same or config.rotary_dim != model.rotary_dim:
        raise CheckpointError(
            f"RoPE frequencies derived from the config differ from the model's own rotation "
            f"in layer {layer} ({kind!r}, rope_type {config.rope_type}); refusing to analyse "
            "with the wrong frequencies: please report this model"
        )
    if abs(config.attention_scaling - model.attention_scaling) > 1e-5:
        raise CheckpointError(
            f"attention scaling mismatch in layer {layer} ({kind!r}): config "
            f"{config.attention_scaling}, model {model.attention_scaling}"
        )
