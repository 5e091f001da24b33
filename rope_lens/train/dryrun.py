"""Dry run: parameter count, memory per GPU, tokens and FLOPs per step for a config and GPU count.

Nothing is allocated: the model is built on the ``meta`` device for an exact parameter count,
and memory is estimated from the usual accounting (fp32 master weights, gradients and AdamW
moments = 16 bytes per parameter, sharded by FSDP; bf16 activations of one micro-batch; the
logits, which HF upcasts to fp32 for the loss). Estimates, not measurements: they are meant to
say whether a plan fits, and how many micro-steps it needs.
"""

from __future__ import annotations

from typing import Any

from rope_lens.errors import InputError
from rope_lens.train.config import TrainConfig
from rope_lens.train.model import build_model, count_parameters, flops_per_token

GIB = 1024**3
H100_BF16_TFLOPS = 989.0  # dense bf16 peak of one H100 SXM


def plan(
    cfg: TrainConfig,
    n_gpus: int,
    *,
    gpu_mem_gib: float = 80.0,
    peak_tflops: float = H100_BF16_TFLOPS,
    mfu: float = 0.40,
) -> dict[str, Any]:
    """Resource plan of ``cfg`` on ``n_gpus`` GPUs.

    Raises:
        InputError: the global batch does not split into whole micro-batches per GPU.
    """
    if n_gpus < 1:
        raise InputError(f"--gpus must be >= 1, got {n_gpus}")
    m = cfg.model
    per_step_micro = cfg.batch_size // cfg.micro_batch_size
    if per_step_micro % n_gpus:
        raise InputError(
            f"batch {cfg.batch_size} = {per_step_micro} micro-batches of "
            f"{cfg.micro_batch_size}; that does not split over {n_gpus} GPUs"
        )
    model = build_model(m, cfg.positional_encoding, cfg.max_eval_len, device="meta")
    params = count_parameters(model)
    shards = n_gpus if cfg.fsdp else 1
    states = 16 * params["total"] / shards  # fp32 weights + grads + AdamW exp_avg, exp_avg_sq
    tokens = cfg.micro_batch_size * cfg.seq_len  # per micro-batch per GPU
    # Saved activations per token per layer: bf16 q/k/v/attn-out, GeGLU gate/up/act/product,
    # norm output; fp32 residual stream and norm input (the weights stay fp32 under autocast).
    qkv = (m.n_heads + 2 * m.n_kv_heads) * m.head_dim
    per_token_layer = 2 * (m.d_model + qkv + m.n_heads * m.head_dim + 4 * m.d_ff) + 8 * m.d_model
    if cfg.activation_checkpointing:  # layer inputs kept, one layer recomputed at a time
        activations = tokens * (m.n_layers * 4 * m.d_model + per_token_layer)
    else:
        activations = tokens * m.n_layers * per_token_layer
    logits = tokens * m.vocab_size * (2 + 4 + 4)  # bf16 logits, fp32 copy, fp32 gradient
    layer_params = params["non_embedding"] / m.n_layers
    gathered = 2 * (layer_params * 2 + params["embedding"]) if cfg.fsdp else 0  # bf16 unshards
    total = (states + activations + logits + gathered) * 1.10  # allocator slack
    fpt = flops_per_token(m, cfg.seq_len)
    step_flops = fpt * cfg.tokens_per_step
    step_s = step_flops / (n_gpus * peak_tflops * 1e12 * mfu)
    return {
        "config": cfg.preset,
        "encoding": cfg.encoding,
        "gpus": n_gpus,
        "strategy": "FSDP (full shard)" if cfg.fsdp else "DDP" if n_gpus > 1 else "one GPU",
        "params_total": params["total"],
        "params_embedding": params["embedding"],
        "tokens_per_step": cfg.tokens_per_step,
        "micro_batch_per_gpu": cfg.micro_batch_size,
        "grad_accum_steps": per_step_micro // n_gpus,
        "mem_states_gib": states / GIB,
        "mem_activations_gib": activations / GIB,
        "mem_logits_gib": logits / GIB,
        "mem_gathered_gib": gathered / GIB,
        "mem_total_gib": total / GIB,
        "gpu_mem_gib": gpu_mem_gib,
        "fits": total / GIB <= gpu_mem_gib,
        "flops_per_token": fpt,
        "flops_per_step": step_flops,
        "step_s_at_mfu": step_s,
        "run_hours_at_mfu": step_s * cfg.steps / 3600,
        "mfu": mfu,
        "total_tokens": cfg.tokens_per_step * cfg.steps,
    }


def format_plan(p: dict[str, Any]) -> str:
    """Human-readable lines of :func:`plan`'s result."""
    return "\n".join(
        [
            f"config {p['config']} ({p['encoding']}) on {p['gpus']} GPU(s), {p['strategy']}",
            f"  parameters        {p['params_total'] / 1e6:,.1f}M "
            f"(embedding {p['params_embedding'] / 1e6:,.1f}M, tied)",
            f"  tokens per step   {p['tokens_per_step']:,} "
            f"(micro-batch {p['micro_batch_per_gpu']}/GPU x {p['grad_accum_steps']} accumulation "
            f"steps x {p['gpus']} GPUs); {p['total_tokens'] / 1e9:,.2f}B tokens in total",
            f"  memory per GPU    {p['mem_total_gib']:,.1f} GiB of {p['gpu_mem_gib']:.0f} "
            f"({'fits' if p['fits'] else 'DOES NOT FIT'}): optimizer states "
            f"{p['mem_states_gib']:,.1f}, activations {p['mem_activations_gib']:,.1f}, logits "
            f"{p['mem_logits_gib']:,.1f}, gathered weights {p['mem_gathered_gib']:,.1f} "
            "(+10% slack)",
            f"  compute           {p['flops_per_token'] / 1e9:,.2f} GFLOP/token, "
            f"{p['flops_per_step'] / 1e12:,.1f} TFLOP/step; at {p['mfu']:.0%} MFU "
            f"{p['step_s_at_mfu']:,.2f} s/step, {_duration(p['run_hours_at_mfu'])} for the run",
        ]
    )


def _duration(hours: float) -> str:
    # Small configs run in minutes; "0.0 h" would hide that.
    return f"{hours:,.1f} h" if hours >= 1 else f"{hours * 60:,.1f} min"
