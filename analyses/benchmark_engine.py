"""Benchmark: the native engine and the TransformerLens backend against a bare sdpa forward.

    python analyses/benchmark_engine.py [--model smollm2-135m] [--shapes 32x512,8x2048]
        [--batch-tokens 2048] [--repeats 2] [--threads 1] [--out docs/benchmarks_engine.json]

Configurations, on the same packed offline-Wikipedia batches for each shape (seqs x tokens):

- ``sdpa_base``: the baseline the issue names: a bare transformers sdpa forward of the base
  model (``model.model``: every decoder layer, no lm_head).
- ``native_band``, ``native_heads``: ``band_norms.run`` / ``heads.run`` on the native engine
  (the default; head scores diag / prev / sink from the model's own kernel's log-sum-exp).
- ``native_heads_spread``: ``heads.run(spread=True)``, adding the exact mean distance and
  entropy (value ``[v, k, j]``: about a second attention pass).
- ``tl_band``, ``tl_heads``: the same on the TransformerLens backend (the old default).

Each configuration runs in its own subprocess, warmed up on one batch; then the process'
peak-RSS counter is reset (``/proc/self/clear_refs``), so memory figures are the extra peak of
the work itself. Peak RSS swings with the C allocator and the machine, so each worker also
measures, untimed, on the first batch, the peak bytes of tensor storage alive at once
(``bench_common.TensorPeak``, read at the op level): the figure the memory target is judged
on. Rounds are interleaved so machine noise hits every configuration alike; the
ratios in the output are medians over rounds, each against ``sdpa_base`` of the same shape.
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

from bench_common import TensorPeak, packed_sequences, rss_kb  # noqa: E402 (same folder)

CONFIGS = ("sdpa_base", "native_band", "native_heads", "native_heads_spread", "tl_band", "tl_heads")


def worker(config: str, model: str, n_seqs: int, seq_len: int, batch_size: int, threads: int):
    import torch

    from rope_lens import inputs
    from rope_lens.analyses import band_norms, heads
    from rope_lens.models import load_model

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    backend = "tl" if config.startswith("tl") else "native"
    lm = load_model(model, device="cpu", backend=backend)
    seqs = packed_sequences(lm.tokenizer, lm.bos_token_id, n_seqs, seq_len)
    pad = lm.tokenizer.pad_token_id
    layers = list(range(lm.n_layers))
    if config == "sdpa_base":
        from transformers import AutoModelForCausalLM

        plain = AutoModelForCausalLM.from_pretrained(
            lm.folder, dtype=torch.float32, attn_implementation="sdpa"
        ).eval()
        del lm.hf_model

    def process(batch_iter):
        if config == "sdpa_base":
            with torch.inference_mode():
                for b in batch_iter:
                    plain.model(b.input_ids, attention_mask=b.attention_mask, use_cache=False)
        elif config.endswith("_band"):
            band_norms.run(lm, batch_iter, layers, progress=False)
        else:
            spread = config.endswith("_spread")
            heads.run(lm, batch_iter, layers, progress=False, spread=spread)

    process(inputs.batches(seqs[:batch_size], batch_size, pad, True))  # warm-up
    Path("/proc/self/clear_refs").write_text("5")
    base = rss_kb("VmRSS")
    t0 = time.perf_counter()
    process(inputs.batches(seqs, batch_size, pad, True))
    seconds = time.perf_counter() - t0
    extra = (rss_kb("VmHWM") - base) / 1024
    with TensorPeak() as peak:  # untimed: the op-level tracker slows the run
        process(inputs.batches(seqs[:batch_size], batch_size, pad, True))
    result = {"config": config, "time_s": seconds, "extra_peak_mb": extra}
    result["tensor_peak_mb"] = peak.peak / 2**20
    print(json.dumps(result))


def spawn(config: str, args, n_seqs: int, seq_len: int, batch_size: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", config, "--model", args.model]
    cmd += ["--n-seqs", str(n_seqs), "--seq-len", str(seq_len)]
    cmd += ["--batch-size", str(batch_size), "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--shapes", default="32x512,8x2048", help="SEQSxTOKENS,...")
    p.add_argument("--batch-tokens", type=int, default=2048, help="tokens per batch")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--out", default="docs/benchmarks_engine.json")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--n-seqs", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--seq-len", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.model, args.n_seqs, args.seq_len, args.batch_size, args.threads)
        return
    configs = args.configs.split(",")
    results: dict = {
        "command": "python " + " ".join(sys.argv),
        "model": args.model,
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "load_average_start": os.getloadavg(),
        "shapes": {},
    }
    for shape in args.shapes.split(","):
        n_seqs, seq_len = (int(v) for v in shape.split("x"))
        batch_size = max(1, args.batch_tokens // seq_len)
        runs: dict[str, list[dict]] = {c: [] for c in configs}
        for _ in range(args.repeats):
            for c in configs:
                r = spawn(c, args, n_seqs, seq_len, batch_size)
                runs[c].append(r)
                print(shape, json.dumps(r), flush=True)
        med = {c: statistics.median(r["time_s"] for r in runs[c]) for c in configs}
        peak = {c: max(r["extra_peak_mb"] for r in runs[c]) for c in configs}
        tensors = {c: max(r["tensor_peak_mb"] for r in runs[c]) for c in configs}
        results["shapes"][shape] = {
            "batch_size": batch_size,
            "runs": runs,
            "median_s": med,
            "time_ratio_vs_sdpa_base": {c: med[c] / med["sdpa_base"] for c in configs},
            "extra_peak_mb": peak,
            "peak_ratio_vs_sdpa_base": {c: peak[c] / max(peak["sdpa_base"], 1e-9) for c in configs},
            "tensor_peak_mb": tensors,
            "tensor_peak_ratio_vs_sdpa_base": {
                c: tensors[c] / max(tensors["sdpa_base"], 1e-9) for c in configs
            },
        }
    results["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(out)
    for shape, r in results["shapes"].items():
        print(
            f"{shape}: {'config':<19} {'median s':>9} {'x sdpa':>7} {'extra MB':>9} {'x sdpa':>7}"
            f" {'tensor MB':>9} {'x sdpa':>7}"
        )
        for c in configs:
            print(
                f"{'':>{len(shape) + 1}} {c:<19} {r['median_s'][c]:>9.2f} "
                f"{r['time_ratio_vs_sdpa_base'][c]:>7.2f} {r['extra_peak_mb'][c]:>9.0f} "
                f"{r['peak_ratio_vs_sdpa_base'][c]:>7.2f} {r['tensor_peak_mb'][c]:>9.1f} "
                f"{r['tensor_peak_ratio_vs_sdpa_base'][c]:>7.2f}"
            )


if __name__ == "__main__":
    main()
