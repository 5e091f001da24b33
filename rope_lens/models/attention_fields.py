"""Config fields that shape attention: the ones the engine models, checked at load.

The layout probe measures what each attention kernel receives (rotation, norms, scales, masks,
sink logits), and every call's keyword arguments and mask are checked at run time; what a
config can still change without any of that showing is an effect *inside* the kernel or the
attention module that the analyses do not reproduce. So every field of a text config whose
name says it concerns attention is either on the allow-list below (the engine measures or reads
its effect, or it does not change the attention of one forward pass), or refused in one line
naming it when it is set, rather than writing a table that might be wrong.

``REFUSED`` names fields whose effect the engine knows it does not model, with the reason.
A field neither known nor refused is refused when set (truthy), asking for a report: a new
attention feature has to be looked at before its tables can be trusted.
"""

from __future__ import annotations

import re
from typing import Any

from rope_lens.errors import CheckpointError

# Names that concern attention (matched anywhere in the field name).
ATTENTION_NAME = re.compile(
    r"attn|attention|rope|rotary|alibi|softcap|sink|window|chunk|qk|position|temperature|nope"
)

# Fields whose effect the engine measures, reads from each attention call, or that do not
# change one forward pass's attention (dropout at eval, shapes the probe reads, biases and
# clamps applied before the rotation, settings of layers that are not softmax attention).
UNDERSTOOD = frozenset(
    {
        # shapes (read from every call)
        "num_attention_heads",
        "num_key_value_heads",
        "num_kv_heads",
        "attention_k_eq_v",
        "num_global_key_value_heads",
        # rotation (measured per layer; the config is the cross-check)
        "rope_parameters",
        "rope_scaling",
        "rope_theta",
        "rope_interleave",
        "partial_rotary_factor",
        "rotary_dim",
        "rotary_pct",
        "rotary_emb_base",
        "no_rope_layers",
        "no_rope_layer_interval",
        "max_position_embeddings",
        "original_max_position_embeddings",
        # masks (read from every call's mask)
        "sliding_window",
        "use_sliding_window",
        "max_window_layers",
        "sliding_window_pattern",
        "_sliding_window_pattern",
        "attention_chunk_size",
        "full_attn_idxs",
        # scales, caps and norms (every call's scaling / softcap; received vectors)
        "query_pre_attn_scalar",
        "attention_multiplier",
        "attn_logit_softcapping",
        "attn_temperature_tuning",
        "attn_scale",
        "use_qk_norm",
        "qk_layernorm",
        "qk_norm",
        # no effect on one eval forward, or before the rotation (measured with it)
        "attention_dropout",
        "attn_pdrop",
        "attention_bias",
        "attention_out_bias",
        "qkv_bias",
        "clip_qkv",
        "final_logit_softcapping",
        "use_bidirectional_attention",  # refused separately when set (rope_config)
        "num_ln_in_parallel_attn",
        "parallel_attn",
        "_attn_implementation",
        "_attn_implementation_internal",
        "attn_implementation",
        "output_attentions",
        # hybrid stacks: settings of layers that are not softmax attention (not analysed)
        "linear_conv_kernel_dim",
        "linear_key_head_dim",
        "linear_value_head_dim",
        "linear_num_key_heads",
        "linear_num_value_heads",
        # not attention at all (the name only looks like it)
        "n_positions",  # GPT-J's context length
        "use_qkv_bias",
        "chunk_size_feed_forward",
    }
)

# rope-lens' own training checkpoints record their encoding under this prefix (frequencies,
# theta, name): measured like any other rotation.
OWN = "rope_lens_"

REFUSED = {
    "alibi": "ALiBi adds distance biases to the attention scores, which rope-lens does not model",
    "position_embedding_type": "absolute or relative position embeddings are not RoPE",
    "use_absolute_position_embeddings": "absolute position embeddings are not RoPE",
    "use_learned_position_embeddings": "learned position embeddings are not RoPE",
    # (``qk_norm_after_rope``, HunYuan: refused by ``rope_config.check_supported``.)
}

# Values of REFUSED fields that mean the feature is off.
_OFF_VALUES = {"position_embedding_type": ("rope", "rotary")}


def _active(value: Any) -> bool:
    return value not in (None, False, 0, 0.0, "", "none") and value != [] and value != {}


def check_fields(cfg: Any) -> None:
    """Refuse, in one line naming the field, a text config that sets an attention field the
    engine does not model (``REFUSED``) or does not know (not ``UNDERSTOOD``)."""
    fields = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))
    model_type = fields.get("model_type", type(cfg).__name__)
    for name, value in sorted(fields.items()):
        if name in UNDERSTOOD or name.startswith(OWN) or not ATTENTION_NAME.search(name):
            continue
        if name in REFUSED:
            if _active(value) and value not in _OFF_VALUES.get(name, ()):
                raise CheckpointError(
                    f"{model_type}: config field {name!r} = {value!r}: {REFUSED[name]}, so "
                    "rope-lens refuses rather than write tables that would be wrong"
                )
            continue
        if _active(value):
            raise CheckpointError(
                f"{model_type}: config field {name!r} = {value!r} shapes attention in a way "
                "rope-lens does not know, so it refuses rather than write tables that might be "
                "wrong; please report this model"
            )
