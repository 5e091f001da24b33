"""Read a model's true RoPE parameters from its own HF config, per layer.

Never from defaults: TransformerLens' ``cfg.rotary_base`` reads 10000 for HF-backed models
whatever the checkpoint says (SmolLM2 uses 1e5, Qwen2 1e6, Llama 3.1 5e5 + llama3 scaling).
We take ``config.rope_parameters`` (per layer type for Gemma 3), compute frequencies with
``rope_lens.rope`` and, at load time, check them against the model's own rotary buffers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

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
        head_dim, n_heads, n_kv_heads, n_layers: shapes.
    """

    layer_specs: tuple[RopeSpec, ...]
    layer_types: tuple[str, ...]
    qk_norm: bool
    head_dim: int
    n_heads: int
    n_kv_heads: int
    n_layers: int

    def describe(self) -> dict[str, Any]:
        by_type: dict[str, Any] = {}
        for spec, kind in zip(self.layer_specs, self.layer_types):
            by_type.setdefault(kind, spec.describe())
        return {
            "per_layer_type": by_type,
            "layer_types": list(self.layer_types),
            "qk_norm_before_rotation": self.qk_norm,
            "head_dim": self.head_dim,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "n_layers": self.n_layers,
        }


def _text_config(config: Any) -> Any:
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def pairing_for(config: Any) -> Pairing:
    return "interleaved" if _text_config(config).model_type in INTERLEAVED_MODEL_TYPES else "half"


def rope_layout(config: Any, has_qk_norm: bool) -> RopeLayout:
    """Per-layer RopeSpecs from an HF config (text config for multimodal models)."""
    cfg = _text_config(config)
    if getattr(cfg, "qk_norm_after_rope", False):
        # HunYuan-style: the norm follows the rotation, so the "_normed" hook would hand us
        # rotated vectors as if they were the pre-rotation ones. Refuse rather than mislabel.
        raise RopeError(
            f"{cfg.model_type}: QK-norm after RoPE is not supported (its pre-rotation vectors "
            "are not exposed by the bridge's hooks)"
        )
    if hasattr(cfg, "standardize_rope_params"):
        cfg.standardize_rope_params()
    n_layers = int(cfg.num_hidden_layers)
    n_heads = int(cfg.num_attention_heads)
    n_kv_heads = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads)
    pairing = pairing_for(cfg)
    layer_types = tuple(getattr(cfg, "layer_types", None) or ["full_attention"] * n_layers)
    params: Mapping[str, Any] | None = getattr(cfg, "rope_parameters", None)
    if params is None:
        raise CheckpointError(f"{cfg.model_type} config has no rope_parameters: not a RoPE model")
    override = getattr(cfg, INV_FREQ_KEY, None)

    specs: dict[str, RopeSpec] = {}
    for kind in sorted(set(layer_types)):
        # Gemma 3 style: {"sliding_attention": {...}, "full_attention": {...}}
        layer_params = params[kind] if kind in params else params
        if override is not None:
            spec = RopeSpec(
                head_dim=head_dim,
                inv_freq=torch.tensor(override, dtype=torch.float64),
                pairing=pairing,
                rope_type=str(getattr(cfg, "rope_lens_encoding", "rope_lens")),
                theta=float(layer_params.get("rope_theta", 10_000.0)),
            )
        else:
            spec = spec_from_rope_parameters(
                layer_params,
                head_dim,
                pairing,
                max_position_embeddings=getattr(cfg, "max_position_embeddings", None),
            )
        specs[kind] = spec
    return RopeLayout(
        layer_specs=tuple(specs[k] for k in layer_types),
        layer_types=layer_types,
        qk_norm=has_qk_norm,
        head_dim=head_dim,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        n_layers=n_layers,
    )


def model_rotary_buffers(hf_model: Any) -> dict[str, tuple[torch.Tensor, float]]:
    """The inverse frequencies the model will actually use, by layer type."""
    rotary = None
    for name, module in hf_model.named_modules():
        if name.endswith("rotary_emb"):
            rotary = module
            break
    if rotary is None:
        return {}
    out = {}
    if hasattr(rotary, "inv_freq"):
        out["*"] = (rotary.inv_freq.detach().cpu(), float(getattr(rotary, "attention_scaling", 1)))
    for kind in getattr(rotary, "layer_types", []) or []:
        buf = getattr(rotary, f"{kind}_inv_freq", None)
        if buf is not None:
            scaling = float(getattr(rotary, f"{kind}_attention_scaling", 1.0))
            out[kind] = (buf.detach().cpu(), scaling)
    return out


def check_against_model(layout: RopeLayout, hf_model: Any) -> None:
    """Fail loudly if our config-derived frequencies differ from the model's own buffers."""
    buffers = model_rotary_buffers(hf_model)
    for spec, kind in zip(layout.layer_specs, layout.layer_types):
        if kind in buffers:
            inv, scaling = buffers[kind]
        elif "*" in buffers:
            inv, scaling = buffers["*"]
        else:
            continue
        ours = spec.inv_freq.float()
        if len(inv) != len(ours) or not torch.allclose(inv.float(), ours, rtol=1e-5, atol=0):
            raise CheckpointError(
                f"RoPE frequencies derived from the config differ from the model's own rotary "
                f"buffers for {kind!r} layers (rope_type {spec.rope_type}); refusing to analyse "
                "with the wrong frequencies: please report this model"
            )
        if abs(scaling - spec.attention_scaling) > 1e-6:
            raise CheckpointError(f"attention scaling mismatch for {kind!r} layers")
