"""GPU check for the native engine at the paper's scale (run by scripts/gpu_check.sh).

Random-weight models with the public shapes and real RoPE parameters of Gemma 7B and Llama 3.1
8B are built directly on the GPU in bf16 (no weights travel). For each, at ``--tokens`` tokens
(default 8,192, batch 1), we time and measure the peak GPU memory of:

- ``forward``: a bare forward of the base model (``model.model``) with the model's own sdpa
  (flash where torch picks it) -- the baseline;
- ``band_norm``: ``band_norms.run`` on the native engine (every layer, q / k / v);
- ``heads``: ``heads.run`` on the native engine: diag / prev / sink from the log-sum-exp of
  the model's own kernel call (flash in bf16), no [T, T] tensor;
- ``heads_spread``: ``heads.run(spread=True)``, adding the exact mean distance and entropy
  (an fp32 memory-efficient call with value ``[k, j]`` beside the model's kernel).

Correctness on the device: the two heads runs must agree on diag / prev / sink (the bf16 flash
log-sum-exp against the fp32 one); the largest difference is written as ``max_score_diff``.

Each is warmed up once and timed as the median of ``--repeats`` runs; peak memory is
``torch.cuda.max_memory_allocated`` over the timed runs minus the memory held before them.
One JSON line per (model, configuration) goes to stdout and to ``$OUT/gpu_engine.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

SHAPES = {
    "gemma-7b": (
        "GemmaConfig",
        dict(
            vocab_size=256_000,
            hidden_size=3072,
            intermediate_size=24_576,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=16,
            head_dim=256,
            max_position_embeddings=8192,
            rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
        ),
    ),
    "llama-3.1-8b": (
        "LlamaConfig",
        dict(
            vocab_size=128_256,
            hidden_size=4096,
            intermediate_size=14_336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            max_position_embeddings=131_072,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500_000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
        ),
    ),
}


SMOKE = dict(  # --smoke: the same code path on CPU with a toy size (checked before a lease)
    vocab_size=1000,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    head_dim=16,
)


def build(name: str, device: str, smoke: bool):
    import transformers
    from transformers import AutoModelForCausalLM

    from rope_lens.models import load_model
    from rope_lens.models.tiny import char_tokenizer

    cls, kw = SHAPES[name]
    if smoke:
        kw = {**kw, **SMOKE, "num_key_value_heads": min(kw["num_key_value_heads"], 2)}
    cfg = getattr(transformers, cls)(**kw)
    cfg.architectures = [cls.replace("Config", "ForCausalLM")]
    dtype = torch.float32 if smoke else torch.bfloat16
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    return load_model(f"random-{name}", device=device, hf_model=model, tokenizer=char_tokenizer())


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    _sync()
    cuda = torch.cuda.is_available()
    held = torch.cuda.memory_allocated() if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() - held if cuda else 0
    return statistics.median(times), peak / 2**30


def check_model(name: str, tokens: int, repeats: int, out_dir: str, smoke: bool) -> None:
    from rope_lens.analyses import band_norms, heads
    from rope_lens.inputs import Batch

    t0 = time.perf_counter()
    device = "cpu" if smoke else "cuda"
    lm = build(name, device, smoke)
    built_s = time.perf_counter() - t0
    ids = torch.randint(10, 1000, (1, tokens), device=device)
    batch = Batch(ids, torch.ones_like(ids), torch.arange(tokens, device=device)[None], ids > 0)
    layers = list(range(lm.n_layers))

    def forward():
        with torch.inference_mode():
            lm.hf_model.model(ids, use_cache=False)

    runs = {
        "forward": forward,
        "band_norm": lambda: band_norms.run(lm, [batch], layers, progress=False),
        "heads": lambda: heads.run(lm, [batch], layers, progress=False),
        "heads_spread": lambda: heads.run(lm, [batch], layers, progress=False, spread=True),
    }
    positional = runs["heads"]()
    spread = runs["heads_spread"]()
    diff = (positional[list(heads.POSITIONAL)] - spread[list(heads.POSITIONAL)]).abs()
    max_score_diff = float(diff.to_numpy().max())
    base = None
    for config, fn in runs.items():
        seconds, peak_gib = measure(fn, repeats)
        base = base or (seconds, peak_gib)
        row = {
            "model": name,
            "config": config,
            "tokens": tokens,
            "kernel": lm.kernel,
            "seconds": round(seconds, 4),
            "extra_peak_gib": round(peak_gib, 3),
            "time_ratio_vs_forward": round(seconds / base[0], 3),
            "peak_ratio_vs_forward": round(peak_gib / max(base[1], 1e-9), 3),
            "build_s": round(built_s, 1),
            "max_score_diff": max_score_diff,
            "gpu": torch.cuda.get_device_name() if not smoke else "cpu (smoke)",
            "torch": torch.__version__,
        }
        print(json.dumps(row), flush=True)  # noqa: T201
        with open(os.path.join(out_dir, "gpu_engine.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="gemma-7b,llama-3.1-8b")
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="toy sizes on CPU (check the script)")
    args = p.parse_args()
    for name in args.models.split(","):
        check_model(name, args.tokens, args.repeats, os.environ.get("OUT", "."), args.smoke)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
