"""Benchmark: streaming band-norm extraction vs two baselines, measured in the same run.

    python analyses/benchmark_band_norms.py [--model smollm2-135m] [--batches 8] [--seq-len 512]
        [--batch-size 4] [--long-batches 32] [--repeats 2] [--out docs/benchmarks_band_norms.json]

Configurations, all on the same batches of packed offline-Wikipedia text (8 x 4 x 512 tokens =
32 x 512 by default):

- ``hf_sdpa``: a plain transformers forward (attn_implementation="sdpa"), logits included.
- ``tl_cache``: TransformerLens ``run_with_cache`` on the q/k/v hooks of every layer, then the
  same chunk-norm computation on the cached tensors (memory grows with the batch).
- ``rope_lens``: ``band_norms.run``: reduction inside the hooks, nothing cached.

Each configuration runs in its own subprocess, warmed up on one batch; then the process'
peak-RSS counter is reset (``/proc/self/clear_refs``), so memory figures are the extra peak of
the work itself. Rounds are interleaved so machine noise hits every configuration alike. In the
first round rope_lens runs ``--long-batches`` and its time and peak after the first
``--batches`` are read off on the way: the peak after 8 and after 32 batches, same process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_common import packed_sequences, rss_kb, timed  # noqa: E402 (same folder)


def worker(
    config: str, model: str, n_batches: int, seq_len: int, batch_size: int, mark: int, threads: int
):
    """Run one configuration over ``n_batches``; print a JSON line with the time and the extra
    peak memory after ``mark`` batches and after all of them."""
    import torch

    from rope_lens import inputs, rope
    from rope_lens.analyses import band_norms
    from rope_lens.models import load_model

    torch.manual_seed(0)
    if threads:
        torch.set_num_threads(threads)
    lm = load_model(model, device="cpu")
    seqs = packed_sequences(lm.tokenizer, lm.bos_token_id, n_batches * batch_size, seq_len)
    pad = lm.tokenizer.pad_token_id
    layers = list(range(lm.n_layers))
    if config == "hf_sdpa":
        from transformers import AutoModelForCausalLM

        plain = AutoModelForCausalLM.from_pretrained(
            lm.folder, dtype=torch.float32, attn_implementation="sdpa"
        ).eval()

    def process(batch_iter):
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

    # Warm-up on one batch (allocator, kernels), then reset the peak-RSS counter.
    process(inputs.batches(seqs[:batch_size], batch_size, pad, True))
    Path("/proc/self/clear_refs").write_text("5")
    base = rss_kb("VmRSS")
    record: dict[int, tuple[float, int]] = {}
    process(timed(inputs.batches(seqs, batch_size, pad, True), {mark}, record))
    print(
        json.dumps(
            {
                "config": config,
                "batches": n_batches,
                "time_s": {k: t for k, (t, _) in record.items()},
                "extra_peak_mb": {k: (hwm - base) / 1024 for k, (_, hwm) in record.items()},
            }
        )
    )


def spawn(config: str, args, n_batches: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", config, "--model", args.model]
    cmd += ["--batches", str(n_batches), "--seq-len", str(args.seq_len)]
    cmd += ["--batch-size", str(args.batch_size), "--mark", str(args.batches)]
    cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    r["time_s"] = {int(k): v for k, v in r["time_s"].items()}
    r["extra_peak_mb"] = {int(k): v for k, v in r["extra_peak_mb"].items()}
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batches", type=int, default=8, help="timed batches (default 8 = 32 seqs)")
    p.add_argument("--long-batches", type=int, default=32, help="memory-growth run (rope_lens)")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default="docs/benchmarks_band_norms.json")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--mark", type=int, default=8, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(
            args.worker,
            args.model,
            args.batches,
            args.seq_len,
            args.batch_size,
            args.mark,
            args.threads,
        )
        return
    configs = ["hf_sdpa", "tl_cache", "rope_lens"]
    results: dict = {
        "command": "python " + " ".join(sys.argv),
        "model": args.model,
        "seqs": args.batches * args.batch_size,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "runs": [],
    }
    # Interleaved rounds so machine noise hits every configuration alike. In the first round
    # rope_lens runs long_batches and its time/peak after the first `batches` is read off.
    times: dict[str, list[float]] = {c: [] for c in configs}
    mem: dict[str, dict[int, float]] = {c: {} for c in configs}
    for round_ in range(args.repeats):
        for c in configs:
            long = c == "rope_lens" and round_ == 0
            r = spawn(c, args, args.long_batches if long else args.batches)
            times[c].append(r["time_s"][args.batches])
            for k, v in r["extra_peak_mb"].items():
                mem[c][k] = max(mem[c].get(k, 0.0), v)
            results["runs"].append(r)
            print(json.dumps(r), flush=True)
    med = {c: statistics.median(times[c]) for c in configs}
    results["median_s"] = med
    results["time_ratio_vs_hf_sdpa"] = {c: med[c] / med["hf_sdpa"] for c in configs}
    results["extra_peak_mb"] = mem
    b = args.batches
    results["peak_ratio_vs_hf_sdpa"] = {c: mem[c][b] / mem["hf_sdpa"][b] for c in configs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"{'config':<10} {'median s':>9} {'x hf_sdpa':>10}  extra peak MB after N batches")
    for c in configs:
        peaks = ", ".join(f"{n}: {m:.0f}" for n, m in sorted(mem[c].items()))
        print(f"{c:<10} {med[c]:>9.2f} {med[c] / med['hf_sdpa']:>10.2f}  {peaks}")


if __name__ == "__main__":
    main()
