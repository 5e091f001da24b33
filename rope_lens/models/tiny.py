"""Tiny random-weight models of real architectures, saved as ordinary HF folders.

For tests, docs and CPU experiments: no hub, no downloads, built in well under a second. The
folder loads through the same ``load_model`` path as a real checkpoint, so tests exercise the
real code. The tokenizer is a character-level WordLevel tokenizer over printable ASCII.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

ARCHS = ("llama", "llama3", "gemma", "gemma3", "qwen2", "qwen3")

_VOCAB = ["<unk>", "<bos>", "<eos>", "<pad>"] + [chr(c) for c in range(32, 127)]

# Every RoPE family the native engine must read (issue: "Engine v2"), as (config class name,
# overrides on top of the common shape). Pairing, partial rotation, scaling and per-layer
# types differ between them; the tests read each one's layout from its own rotation.
_LLAMA_SCALING = {
    "linear": {"rope_type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 4.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256},
    "longrope": {
        "rope_type": "longrope",
        "short_factor": [1.0 + 0.1 * i for i in range(8)],
        "long_factor": [2.0 + 0.2 * i for i in range(8)],
        "original_max_position_embeddings": 64,
    },
}
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    **{
        f"llama-{kind}": (
            "LlamaConfig",
            {"rope_parameters": {"rope_theta": 10_000.0, **params}},
        )
        for kind, params in _LLAMA_SCALING.items()
    },
    "mistral": ("MistralConfig", {"sliding_window": 8}),
    "qwen2": ("Qwen2Config", {}),
    "qwen3": ("Qwen3Config", {}),
    "gemma": ("GemmaConfig", {"num_key_value_heads": 1}),
    "gemma2": ("Gemma2Config", {"num_key_value_heads": 1, "sliding_window": 8}),
    "gemma3": (
        "Gemma3TextConfig",
        {
            "num_hidden_layers": 3,
            "sliding_window": 8,
            "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
        },
    ),
    "gemma4": (
        "Gemma4TextConfig",
        {
            "num_hidden_layers": 4,
            # As in the real checkpoints, full layers have larger heads (and here fewer KV
            # heads) than the sliding ones: every per-layer shape is exercised.
            "global_head_dim": 32,
            "num_global_key_value_heads": 1,
            "attention_k_eq_v": True,
            "sliding_window": 8,
            "vocab_size_per_layer_input": len(_VOCAB),
            "hidden_size_per_layer_input": 8,
            "layer_types": ["sliding_attention"] * 3 + ["full_attention"],
        },
    ),
    "phi": ("PhiConfig", {"partial_rotary_factor": 0.5, "num_key_value_heads": None}),
    "phi3": ("Phi3Config", {}),
    "gpt_neox": ("GPTNeoXConfig", {"rotary_pct": 0.25, "num_key_value_heads": None}),
    "stablelm": ("StableLmConfig", {"partial_rotary_factor": 0.25}),
    "olmo2": ("Olmo2Config", {}),
    "cohere": ("CohereConfig", {}),
    "gptj": (
        "GPTJConfig",
        {"n_embd": 64, "n_layer": 2, "n_head": 4, "rotary_dim": 8, "n_positions": 1024},
    ),
    "granite": ("GraniteConfig", {}),
    "glm": ("GlmConfig", {}),
    # --- 2025-26 families whose layout varies per layer (issue 18) ---------------------------
    # NoPE layers between RoPE layers: SmolLM3 every 2nd layer here (every 4th in the real one).
    "smollm3": ("SmolLM3Config", {"num_hidden_layers": 4, "no_rope_layer_interval": 2}),
    # Llama 4 text: NoPE every 2nd layer (4th in the real one) with attention temperature
    # tuning (floor_scale 4 makes it act within a short text), weightless RMS norm after
    # RoPE on the RoPE layers, chunked attention (chunks of 8) on the RoPE layers, MoE.
    "llama4": (
        "Llama4TextConfig",
        {
            "num_hidden_layers": 4,
            "no_rope_layer_interval": 2,
            "attention_chunk_size": 8,
            "floor_scale": 4,
            "attn_scale": 0.5,
            "intermediate_size_mlp": 128,
            "intermediate_size": 64,
            "num_local_experts": 2,
            "interleave_moe_layer_step": 2,
        },
    ),
    # Command R7B: sliding layers rotate, the global one does not.
    "cohere2": (
        "Cohere2Config",
        {
            "num_hidden_layers": 4,
            "sliding_window": 8,
            "layer_types": ["sliding_attention"] * 3 + ["full_attention"],
        },
    ),
    # EXAONE 4: the same (global layers without RoPE), with QK-norm before rotation.
    "exaone4": (
        "Exaone4Config",
        {"num_hidden_layers": 4, "sliding_window": 8, "sliding_window_pattern": 4},
    ),
    # Hybrids: gated delta-net (linear attention) on 3 of 4 layers; attention layers with a
    # sigmoid output gate and partial rotary (25%).
    "qwen3_next": (
        "Qwen3NextConfig",
        {
            "num_hidden_layers": 4,
            "linear_key_head_dim": 8,
            "linear_value_head_dim": 8,
            "linear_num_key_heads": 2,
            "linear_num_value_heads": 4,
            "num_experts": 2,
            "num_experts_per_tok": 1,
            "moe_intermediate_size": 32,
            "shared_expert_intermediate_size": 32,
        },
    ),
    "qwen3_5": (
        "Qwen3_5TextConfig",
        {
            "num_hidden_layers": 4,
            "linear_key_head_dim": 8,
            "linear_value_head_dim": 8,
            "linear_num_key_heads": 2,
            "linear_num_value_heads": 4,
        },
    ),
    # LFM2: short convolutions on the layers without attention (layer 0 is one).
    "lfm2": (
        "Lfm2Config",
        {"num_hidden_layers": 4, "full_attn_idxs": [1, 3], "block_multiple_of": 32},
    ),
    # gpt-oss: learned per-head sink logits, YaRN, sliding / full alternating, MoE; its
    # attention needs the eager kernel (no sdpa with sinks).
    "gpt_oss": (
        "GptOssConfig",
        {
            "num_hidden_layers": 2,
            "sliding_window": 8,
            "num_local_experts": 2,
            "num_experts_per_tok": 1,
            "intermediate_size": 32,
            "rope_parameters": {
                "rope_type": "yarn",
                "rope_theta": 150_000.0,
                "factor": 32.0,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
                "truncate": False,
                "original_max_position_embeddings": 256,
            },
        },
    ),
    # Families that passed before issue 18, kept passing.
    "mixtral": (
        "MixtralConfig",
        {"num_local_experts": 2, "num_experts_per_tok": 1, "intermediate_size": 32},
    ),
    "qwen3_moe": (
        "Qwen3MoeConfig",
        {"num_experts": 2, "num_experts_per_tok": 1, "moe_intermediate_size": 32},
    ),
    "olmoe": ("OlmoeConfig", {"num_experts": 2, "num_experts_per_tok": 1, "intermediate_size": 32}),
    "apertus": ("ApertusConfig", {}),
    "helium": ("HeliumConfig", {}),
    "seed_oss": ("SeedOssConfig", {}),
    "ernie4_5": ("Ernie4_5Config", {}),
    "glm4": ("Glm4Config", {}),
    "persimmon": ("PersimmonConfig", {"num_key_value_heads": None}),
    "nemotron": ("NemotronConfig", {}),
    "falcon": (
        "FalconConfig",
        {
            "new_decoder_architecture": True,
            "num_kv_heads": 2,
            "num_key_value_heads": None,
            "head_dim": None,  # a property of FalconConfig (hidden / heads = 16)
        },
    ),
    "vaultgemma": (
        "VaultGemmaConfig",
        {"num_key_value_heads": 1, "sliding_window": 8, "query_pre_attn_scalar": 16},
    ),
    "ministral3": (
        "Ministral3Config",
        {
            "rope_parameters": {
                "rope_type": "yarn",
                "rope_theta": 1_000_000.0,
                "factor": 16.0,
                "original_max_position_embeddings": 256,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
                "mscale_all_dim": 1.0,
                "mscale": 1.0,
                "llama_4_scaling_beta": 0.1,
            }
        },
    ),
    "nanochat": ("NanoChatConfig", {"num_key_value_heads": 2}),
}
# Multi-head latent attention: keys are rebuilt from a low-rank latent plus a separate
# rotary part, so there is no one rotated key per head to analyse. Refused with one line.
MLA_FAMILY = (
    "DeepseekV3Config",
    {
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "kv_lora_rank": 16,
        "q_lora_rank": 16,
        "qk_rope_head_dim": 8,
        "qk_nope_head_dim": 8,
        "v_head_dim": 16,
        "first_k_dense_replace": 2,
        "num_key_value_heads": 4,
    },
)


# The shared tiny shape: 2 layers, 4 query heads over 2 KV heads (GQA), head_dim 16.
_COMMON: dict[str, Any] = dict(
    vocab_size=len(_VOCAB),
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=1024,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=3,
)


def char_tokenizer():
    """A PreTrainedTokenizerFast mapping each printable ASCII character to one token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(_VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def tiny_config(arch: str, **overrides: Any):
    """Config of a 2-4 layer model of ``arch`` with GQA, head_dim 16 (Gemma 3: 32)."""
    from transformers import (
        Gemma3TextConfig,
        GemmaConfig,
        LlamaConfig,
        Qwen2Config,
        Qwen3Config,
    )

    common: dict[str, Any] = dict(_COMMON)
    if arch == "llama":
        cfg = LlamaConfig(
            **{**common, "rope_parameters": {"rope_type": "default", "rope_theta": 1e5}}
        )
        cfg.architectures = ["LlamaForCausalLM"]
    elif arch == "llama3":
        cfg = LlamaConfig(
            **{
                **common,
                "rope_parameters": {
                    "rope_type": "llama3",
                    "rope_theta": 500_000.0,
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 64,
                },
            }
        )
        cfg.architectures = ["LlamaForCausalLM"]
    elif arch == "gemma":
        cfg = GemmaConfig(**{**common, "num_key_value_heads": 1})
        cfg.architectures = ["GemmaForCausalLM"]
    elif arch == "gemma3":
        cfg = Gemma3TextConfig(
            **{
                **common,
                "head_dim": 32,
                "num_hidden_layers": 3,
                "num_key_value_heads": 1,
                "sliding_window": 8,
                "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
            }
        )
        cfg.architectures = ["Gemma3ForCausalLM"]
    elif arch == "qwen2":
        cfg = Qwen2Config(
            **{**common, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}
        )
        cfg.architectures = ["Qwen2ForCausalLM"]
    elif arch == "qwen3":
        cfg = Qwen3Config(
            **{**common, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}
        )
        cfg.architectures = ["Qwen3ForCausalLM"]
    else:
        raise ValueError(f"unknown tiny arch {arch!r}; choose from {ARCHS}")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def family_config(family: str):
    """Tiny config of any family in ``FAMILIES`` (or ``"deepseek_v3"``, the MLA refusal)."""
    import transformers
    from transformers import AutoModelForCausalLM

    cls_name, extra = MLA_FAMILY if family == "deepseek_v3" else FAMILIES[family]
    common: dict[str, Any] = dict(_COMMON)
    kwargs: dict[str, Any] = {k: v for k, v in {**common, **extra}.items() if v is not None}
    cfg = getattr(transformers, cls_name)(**kwargs)
    model_cls: Any = AutoModelForCausalLM._model_mapping[type(cfg)]
    cfg.architectures = [model_cls.__name__]
    return cfg


def family_model_dir(family: str, folder: str | Path, seed: int = 0) -> Path:
    """Build a random model of ``family`` (see ``FAMILIES``) and save it into ``folder``."""
    return _save(family_config(family), folder, seed)


def tiny_model_dir(arch: str, folder: str | Path, seed: int = 0, **overrides: Any) -> Path:
    """Build a random ``arch`` model and save it (safetensors + tokenizer) into ``folder``."""
    return _save(tiny_config(arch, **overrides), folder, seed)


def _save(config: Any, folder: str | Path, seed: int) -> Path:
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    # Random init leaves q/k small; scale them so attention is not uniform and RoPE matters.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(
                ("q_proj.weight", "k_proj.weight", "query_key_value.weight", "qkv_proj.weight")
            ):
                p.mul_(8.0)
    model.save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder
