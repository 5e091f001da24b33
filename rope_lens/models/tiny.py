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

    common = dict(
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


def tiny_model_dir(arch: str, folder: str | Path, seed: int = 0, **overrides: Any) -> Path:
    """Build a random ``arch`` model and save it (safetensors + tokenizer) into ``folder``."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, **overrides))
    # Random init leaves q/k small; scale them so attention is not uniform and RoPE matters.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(8.0)
    model.save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder
