"""Benchmark the training step on CPU: tokens/s, model FLOPs utilisation, p-RoPE's overhead.

One training step = forward + backward + AdamW on a packed batch of random tokens, for the
``cpu`` preset (or ``--config``). Encodings are timed interleaved, round after round, so that
load from other processes on a shared machine hits them all alike; medians are reported.

Step time is reported as wall time and as this process's CPU time; on a busy shared machine
the CPU time is the steadier basis for the overhead comparison. The overhead verdict uses the
paired per-step ratio (step i of an encoding against step i of RoPE, run back to back), its
median and a bootstrap 95% interval, which cancels most of the drift in machine load.

MFU = flops_per_token x tokens/s / peak, with two peaks: the theoretical fp32 peak
(cores x clock x 32 FLOP/cycle for AVX2 + 2 FMA units, clock from /proc/cpuinfo) and the
measured peak of a large fp32 matmul on the same threads.

usage: nice -n 10 python analyses/benchmark_train.py [--rounds 6] [--steps 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from pathlib import Path

import torch

from rope_lens.train.config import get_preset, override
from rope_lens.train.encodings import get_encoding
from rope_lens.train.model import build_model, count_parameters, flops_per_token


def cpu_peak_flops(threads: int) -> tuple[float, str]:
    """Theoretical fp32 FLOP/s of ``threads`` cores and how it was derived."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    mhz = re.search(r"cpu MHz\s*:\s*([\d.]+)", info)
    ghz = float(mhz.group(1)) / 1000 if mhz else 2.5
    per_cycle = 64 if "avx512f" in info else 32 if "avx2" in info else 16
    return threads * ghz * 1e9 * per_cycle, f"{threads} cores x {ghz:.2f} GHz x {per_cycle}"


def matmul_peak_flops(n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def make_runner(cfg, encoding: str, seed: int = 0):
    """A closure doing one full optimiser step; returns the loss."""
    torch.manual_seed(seed)
    model = build_model(cfg.model, get_encoding(encoding, cfg.theta), cfg.seq_len).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    batch = torch.randint(3, cfg.model.vocab_size, (cfg.batch_size, cfg.seq_len), generator=gen)

    def step() -> float:
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return model, step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--encodings", nargs="+", default=["rope", "0.75-rope", "nope"])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument(
        "--steps", type=int, default=5, help="timed steps per encoding per round (interleaved)"
    )
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    cfg = override(get_preset(args.config), args.overrides)
    runners = {e: make_runner(cfg, e) for e in args.encodings}
    from torch.utils.flop_counter import FlopCounterMode

    counted = {}
    for e, (_, step) in runners.items():  # warm-up (allocator, kernels) + counted FLOPs
        step()
        with FlopCounterMode(display=False) as fc:
            step()
        counted[e] = fc.get_total_flops()
    times: dict[str, list[float]] = {e: [] for e in args.encodings}
    cpu: dict[str, list[float]] = {e: [] for e in args.encodings}
    for r in range(args.rounds):
        order = args.encodings if r % 2 == 0 else args.encodings[::-1]  # cancel drift
        for _ in range(args.steps):  # alternate encodings step by step: load hits all alike
            for e in order:
                t, c = time.perf_counter(), time.process_time()
                runners[e][1]()
                times[e].append(time.perf_counter() - t)
                cpu[e].append(time.process_time() - c)

    fpt = flops_per_token(cfg.model, cfg.seq_len)
    peak, peak_how = cpu_peak_flops(args.threads)
    measured = matmul_peak_flops()
    params = count_parameters(runners[args.encodings[0]][0])
    rows = {}
    for e, ts in times.items():
        med = statistics.median(ts)
        tok_s = cfg.tokens_per_step / med
        rows[e] = {
            "step_ms_median": med * 1e3,
            "step_ms_iqr": (statistics.quantiles(ts, n=4)[2] - statistics.quantiles(ts, n=4)[0])
            * 1e3,
            "tokens_per_s": tok_s,
            # CPU seconds of this process: what other processes on a shared machine disturb least
            "cpu_ms_median": statistics.median(cpu[e]) * 1e3,
            # per CPU-second of this process: throughput had it had its cores to itself
            "tokens_per_cpu_s": cfg.tokens_per_step / statistics.median(cpu[e]),
            # CPU time sums over threads, so it is measured against one core's peak
            "mfu_cpu_time": fpt
            * cfg.tokens_per_step
            / statistics.median(cpu[e])
            / (peak / args.threads),
            "counted_flops_per_step": counted[e],
            "mfu_theoretical": fpt * tok_s / peak,
            "mfu_matmul": fpt * tok_s / measured,
        }
    if "rope" in times:  # paired per-step ratios: steps i of two encodings ran back to back
        import random

        rng = random.Random(0)
        for e in rows:
            ratios = [a / b - 1 for a, b in zip(cpu[e], cpu["rope"], strict=True)]
            boot = sorted(
                statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(2000)
            )
            rows[e]["paired_cpu_overhead_median"] = statistics.median(ratios)
            rows[e]["paired_cpu_overhead_ci95"] = (boot[50], boot[1949])
    base = rows.get("rope")
    print(
        f"config {cfg.preset}: {params['total'] / 1e6:.2f}M params, batch {cfg.batch_size} x "
        f"seq {cfg.seq_len} = {cfg.tokens_per_step} tokens/step, {fpt / 1e6:.2f} MFLOP/token, "
        f"{args.threads} threads, load avg {os.getloadavg()[0]:.1f}"
    )
    print(
        "torch FlopCounterMode per step (matmuls + SDPA): "
        + ", ".join(f"{e} {f / 1e9:.3f} GFLOP" for e, f in counted.items())
        + f"; formula {fpt * cfg.tokens_per_step / 1e9:.3f} GFLOP"
    )
    print(
        f"peak fp32: theoretical {peak / 1e9:.0f} GFLOP/s ({peak_how}); "
        f"measured 1024^3 matmul {measured / 1e9:.0f} GFLOP/s"
    )
    print(
        "\n| encoding | step ms (median, IQR) | tokens/s | MFU (theor.) | MFU (matmul) "
        "| CPU ms/step | tokens/CPU-s | MFU (CPU time, theor.) | overhead vs RoPE (wall, CPU) "
        "| paired CPU overhead [95% CI] |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for e, r in rows.items():
        over = "–"
        if base:
            wall = (r["step_ms_median"] / base["step_ms_median"] - 1) * 100
            cpu_over = (r["cpu_ms_median"] / base["cpu_ms_median"] - 1) * 100
            over = f"{wall:+.1f}%, {cpu_over:+.1f}%"
        print(
            f"| {e} | {r['step_ms_median']:.1f} ({r['step_ms_iqr']:.1f}) | "
            f"{r['tokens_per_s']:,.0f} | {r['mfu_theoretical']:.1%} | {r['mfu_matmul']:.1%} "
            f"| {r['cpu_ms_median']:.1f} | {r['tokens_per_cpu_s']:,.0f} | {r['mfu_cpu_time']:.1%} "
            f"| {over} | {_paired(r)} |"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "config": cfg.to_dict(),
                    "threads": args.threads,
                    "peak_theoretical": peak,
                    "peak_matmul": measured,
                    "flops_per_token": fpt,
                    "rows": rows,
                    "n_steps": args.rounds * args.steps,
                    "load_avg": os.getloadavg(),
                },
                indent=2,
            )
        )


def _paired(row: dict) -> str:
    if "paired_cpu_overhead_median" not in row:
        return "–"
    lo, hi = row["paired_cpu_overhead_ci95"]
    return f"{row['paired_cpu_overhead_median']:+.1%} [{lo:+.1%}, {hi:+.1%}]"


if __name__ == "__main__":
    main()
