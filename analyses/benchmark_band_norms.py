"""Benchmark: streaming band-norm extraction vs two baselines, measured in the same run.

    python analyses/benchmark_band_norms.py [--model smollm2-135m] [--seqs 32] [--seq-len 512]
        [--batch-size 4] [--repeats 3] [--out docs/benchmarks_band_norms.json]

Configurations, all on the same batches of packed offline-Wikipedia text:

- ``hf_sdpa``: a plain transformers forward (attn_implementation="sdpa"), logits included.
- ``tl_cache``: TransformerLens ``run_with_cache`` on the q/k/v hooks of every layer, then the
  same chunk-norm computation on the cached tensors (memory grows with the batch).
- ``rope_lens``: ``band_norms.run``: reduction inside the hooks, nothing cached.

Time: median over ``--repeats`` of each configuration, interleaved so machine noise hits all
alike. Memory: each configuration runs in its own subprocess; after the model is loaded the
process' peak-RSS counter is reset (``/proc/self/clear_refs``), so the reported figure is the
extra peak memory of the work itself, for 8 and for 32 batches.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def packed_sequences(tokenizer, bos_id, n_seqs: int, seq_len: int) -> list[list[int]]:
    """Pack offline Wikipedia leads into n_seqs sequences of exactly seq_len tokens (BOS first)."""
    from rope_lens.inputs import load_texts

    stream: list[int] = []
    for text in load_texts("wiki"):
        stream += tokenizer(text + "\n\n", add_special_tokens=False)["input_ids"]
        if len(stream) >= n_seqs * (seq_len - 1):
            break
    body = seq_len - 1
    return [[bos_id] + stream[i * body : (i + 1) * body] for i in range(n_seqs)]


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def worker(config: str, model: str, n_seqs: int, seq_len: int, batch_size: int, repeats: int):
    """Run one configuration; print a JSON line with times and extra peak memory."""
    import torch

    from rope_lens import inputs, rope
    from rope_lens.analyses import band_norms
    from rope_lens.models import load_model

    torch.manual_seed(0)
    lm = load_model(model, device="cpu")
    seqs = packed_sequences(lm.tokenizer, lm.bos_token_id, n_seqs, seq_len)
    pad = lm.tokenizer.pad_token_id
    layers = list(range(lm.n_layers))
    if config == "hf_sdpa":
        from transformers import AutoModelForCausalLM

        plain = AutoModelForCausalLM.from_pretrained(
            lm.folder, dtype=torch.float32, attn_implementation="sdpa"
        ).eval()

    def once():
        batch_iter = inputs.batches(seqs, batch_size, pad, True)
        if config == "rope_lens":
            band_norms.run(lm, batch_iter, layers, progress=False)
        elif config == "hf_sdpa":
            with torch.inference_mode():
                for b in batch_iter:
                    plain(b.input_ids, attention_mask=b.attention_mask)
        elif config == "tl_cache":
            names = [f"blocks.{i}.attn.hook_{k}" for i in layers for k in "qkv"]
            sums: dict[str, torch.Tensor] = {}
            with torch.inference_mode():
                for b in batch_iter:
                    _, cache = lm.bridge.run_with_cache(
                        b.input_ids, attention_mask=b.attention_mask, names_filter=names
                    )
                    for name in names:
                        spec = lm.rope.layer_specs[int(name.split(".")[1])]
                        x = cache[name].float()
                        n = rope.chunk_norms(x, spec)[b.count_mask].sum(0).double()
                        sums[name] = sums.get(name, 0) + n
                    del cache

    once()  # warm-up (allocator, kernels)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter
    base = _rss_kb("VmRSS")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    peak = _rss_kb("VmHWM")
    print(
        json.dumps(
            {
                "config": config,
                "batches": (n_seqs + batch_size - 1) // batch_size,
                "times_s": times,
                "extra_peak_mb": (peak - base) / 1024,
                "peak_rss_mb": peak / 1024,
            }
        )
    )


def spawn(config, args, n_seqs, repeats):
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        config,
        "--model",
        args.model,
        "--seqs",
        str(n_seqs),
        "--seq-len",
        str(args.seq_len),
        "--batch-size",
        str(args.batch_size),
        "--repeats",
        str(repeats),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--seqs", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="docs/benchmarks_band_norms.json")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.model, args.seqs, args.seq_len, args.batch_size, args.repeats)
        return
    configs = ["hf_sdpa", "tl_cache", "rope_lens"]
    results = {
        "model": args.model,
        "seqs": args.seqs,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "cpu_count": os.cpu_count(),
        "runs": [],
    }
    # Timing: interleave single-repeat subprocess runs so noise is shared.
    times: dict[str, list[float]] = {c: [] for c in configs}
    mem: dict[str, dict[int, float]] = {c: {} for c in configs}
    for _ in range(args.repeats):
        for c in configs:
            r = spawn(c, args, args.seqs, 1)
            times[c] += r["times_s"]
            mem[c][r["batches"]] = r["extra_peak_mb"]
            results["runs"].append(r)
    for c in configs:  # 4x the batches: does the peak grow?
        r = spawn(c, args, args.seqs * 4, 1)
        mem[c][r["batches"]] = r["extra_peak_mb"]
        results["runs"].append(r)
    med = {c: statistics.median(times[c]) for c in configs}
    results["median_s"] = med
    results["time_ratio_vs_hf_sdpa"] = {c: med[c] / med["hf_sdpa"] for c in configs}
    results["extra_peak_mb"] = mem
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'config':<10} {'median s':>9} {'x hf_sdpa':>10}  extra peak MB by #batches")
    for c in configs:
        peaks = ", ".join(f"{b}: {m:.0f}" for b, m in sorted(mem[c].items()))
        print(f"{c:<10} {med[c]:>9.2f} {med[c] / med['hf_sdpa']:>10.2f}  {peaks}")


if __name__ == "__main__":
    main()
