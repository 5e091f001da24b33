"""The training model: an HF ``GemmaForCausalLM`` whose rotary frequencies come from an Encoding.

Using transformers' own Gemma (RMSNorm, GeGLU, tied embeddings, MQA/GQA, configurable head_dim,
SDPA attention) makes every checkpoint a standard HF folder, so the analysis pipeline loads it
like any pretrained model. The only non-standard part is the frequency vector, saved in
``config.json`` as ``rope_lens_inv_freq`` (plus ``rope_lens_encoding``) and written back into
the rotary buffers by :func:`rope_lens.train.encodings.apply_inv_freq` after loading.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rope_lens.errors import CheckpointError
from rope_lens.train.config import ModelConfig
from rope_lens.train.encodings import Encoding, apply_inv_freq, get_encoding

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Gemma's special-token ids; the local tokenizer is trained to put them at the same ids.
PAD_ID, EOS_ID, BOS_ID = 0, 1, 2


def hf_config(cfg: ModelConfig, encoding: Encoding, max_positions: int) -> Any:
    """A ``GemmaConfig`` for ``cfg`` whose saved form records the exact frequencies."""
    from transformers import GemmaConfig

    config = GemmaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim,
        hidden_act="gelu_pytorch_tanh",
        max_position_embeddings=max_positions,
        initializer_range=cfg.init_std,
        rope_parameters=encoding.hf_rope_parameters(),
        tie_word_embeddings=True,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=BOS_ID,
        attention_dropout=0.0,
        use_cache=False,
    )
    config.rope_lens_inv_freq = [float(v) for v in encoding.inv_freq(cfg.head_dim)]
    config.rope_lens_encoding = encoding.name
    config.rope_lens_theta = encoding.theta
    return config


def build_model(
    cfg: ModelConfig,
    encoding: Encoding,
    max_positions: int,
    *,
    attn_implementation: str = "sdpa",
    device: str | torch.device | None = None,
) -> Any:
    """A randomly initialised ``GemmaForCausalLM`` (seed with ``torch.manual_seed`` first).

    Args:
        cfg: the model shape.
        encoding: the positional encoding; its frequencies go into the rotary buffers.
        max_positions: longest sequence the model will see (4x the training length for the
            length-generalisation evaluation).
        attn_implementation: ``"sdpa"`` (default) or ``"eager"``.
        device: ``"meta"`` builds without memory (parameter counts for the dry run).
    """
    from transformers import GemmaForCausalLM

    config = hf_config(cfg, encoding, max_positions)
    config._attn_implementation = attn_implementation
    ctx = torch.device(device) if device is not None else contextlib.nullcontext()
    with ctx:
        model = GemmaForCausalLM(config)
    if str(device) != "meta":
        apply_inv_freq(model, config.rope_lens_inv_freq)
    return model


def encoding_of(config: Any) -> Encoding | None:
    """The Encoding recorded in an HF config, or None for a model not trained here."""
    name = getattr(config, "rope_lens_encoding", None)
    if name is None:
        return None
    theta = float(getattr(config, "rope_lens_theta", None) or config.rope_parameters["rope_theta"])
    return get_encoding(name, theta)


def load_trained(path: str | Path, *, device: str = "cpu", dtype: torch.dtype | None = None):
    """Load a checkpoint folder written by ``rope-lens train`` as (model, tokenizer).

    Raises:
        CheckpointError: missing files, unreadable weights, or frequencies that do not match the
            model's head size.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} is not a checkpoint folder (no config.json)")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype or torch.float32, attn_implementation="sdpa", use_safetensors=True
        )
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"cannot load checkpoint {path}: {err}") from err
    inv = getattr(model.config, "rope_lens_inv_freq", None)
    if inv is None:
        raise CheckpointError(f"{path} has no rope_lens_inv_freq in config.json")
    apply_inv_freq(model, inv)
    # transformers decorates PreTrainedModel.to with functools.wraps(nn.Module.to); typeshed's
    # _Wrapped is not a descriptor, so pyright does not bind `self` and reads `device` as it.
    return model.to(device).eval(), tokenizer  # pyright: ignore[reportArgumentType]


def count_parameters(model: PreTrainedModel) -> dict[str, int]:
    """Parameter counts; tied embeddings are counted once."""
    total = sum(p.numel() for p in model.parameters())  # parameters() de-duplicates tied ones
    weight = model.get_input_embeddings().weight
    assert isinstance(weight, torch.Tensor)  # typed nn.Module, whose attributes read as Module too
    embed = weight.numel()
    return {"total": total, "embedding": embed, "non_embedding": total - embed}


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 x (matmul params incl. the tied LM head) + attention.

    Attention is PaLM's 12 * layers * heads * head_dim * seq_len (scores and values, forward
    and backward, without the causal halving), the convention MFU numbers are usually quoted in.
    """
    d, h, kv, hd, ff = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff
    per_layer = d * h * hd * 2 + d * kv * hd * 2 + 3 * d * ff  # q, o, k, v, gate/up/down
    matmul_params = cfg.n_layers * per_layer + d * cfg.vocab_size  # + LM head
    return 6.0 * matmul_params + 12.0 * cfg.n_layers * h * hd * seq_len
