"""GPU check for training and data-parallel analysis (run by scripts/gpu_check.sh).

1. ``train``: the ``gpu`` training preset (about 34M parameters; ``--set`` to change it), one
   optimizer step = forward + backward + clip + AdamW on ``micro_batch_size`` x ``seq_len``
   random tokens in bf16 autocast, for ``--steps`` timed steps after ``--warmup``, with and
   without ``torch.compile``: step ms (median), tokens/s and MFU = flops_per_token x tokens/s
   / the device's dense bf16 peak (table below, or ``--peak-tflops``).
2. ``overhead``: 0.75-RoPE against RoPE, paired: the two models step alternately and the
   per-pair ratio's median is the overhead (goal <= 2%).
3. ``data_parallel``: ``rope-lens analyze`` (band norms, then heads) on a random Llama-shaped
   model, 2 processes on the one GPU (torchrun, gloo: nccl refuses two ranks on one GPU)
   against one process: wall time of each and the largest relative deviation of the tables.

One JSON line per measurement to stdout and ``$OUT/gpu_train.jsonl``. ``--smoke`` runs the
same code on CPU with toy sizes (fp32, no compile unless ``--compile``), to check the script
before a device is lent.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, by a substring of the device name.
BF16_PEAK = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
SMOKE_SET = [
    "model.vocab_size=384", "model.d_model=32", "model.n_layers=2", "model.n_heads=2",
    "model.n_kv_heads=1", "model.head_dim=16", "model.d_ff=64", "seq_len=32",
    "batch_size=4", "micro_batch_size=4",
]  # fmt: skip


def emit(row: dict) -> None:
    line = json.dumps(row)
    print(line, flush=True)  # noqa: T201
    out = os.environ.get("OUT")
    if out:
        with open(Path(out) / "gpu_train.jsonl", "a") as fh:
            fh.write(line + "\n")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def make_step(cfg, encoding: str, device: str, bf16: bool, compile_: bool):
    from rope_lens.train.encodings import get_encoding
    from rope_lens.train.model import build_model

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, get_encoding(encoding, cfg.theta), cfg.seq_len)
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, fused=device.startswith("cuda"))
    fwd = torch.compile(model) if compile_ else model
    gen = torch.Generator().manual_seed(cfg.seed)
    shape = (cfg.micro_batch_size, cfg.seq_len)
    batch = torch.randint(3, cfg.model.vocab_size, shape, generator=gen).to(device)
    kind = "cuda" if device.startswith("cuda") else "cpu"

    def step() -> float:
        sync(device)
        t = time.perf_counter()
        with torch.autocast(kind, dtype=torch.bfloat16, enabled=bf16):
            loss = fwd(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        return time.perf_counter() - t

    return step


def peak_flops(device: str, given: float | None) -> tuple[float | None, str]:
    if given:
        return given * 1e12, "given"
    if not device.startswith("cuda"):
        return None, "cpu: no bf16 peak"
    name = torch.cuda.get_device_name()
    for key, peak in BF16_PEAK.items():
        if key in name:
            return peak, name
    return None, name


def check_train(cfg, args, device: str) -> None:
    from rope_lens.train.model import flops_per_token

    bf16 = not args.smoke
    peak, peak_of = peak_flops(device, args.peak_tflops)
    tokens = cfg.micro_batch_size * cfg.seq_len
    fpt = flops_per_token(cfg.model, cfg.seq_len)
    for compile_ in (False, True) if (not args.smoke or args.compile) else (False,):
        t0 = time.perf_counter()
        step = make_step(cfg, "rope", device, bf16, compile_)
        for _ in range(args.warmup):  # compile happens here
            step()
        warm_s = time.perf_counter() - t0
        times = [step() for _ in range(args.steps)]
        med = statistics.median(times)
        tok_s = tokens / med
        emit(
            {
                "check": "train",
                "preset": args.config,
                "compile": compile_,
                "bf16": bf16,
                "tokens_per_step": tokens,
                "step_ms_median": round(med * 1e3, 2),
                "tokens_per_s": round(tok_s),
                "mfu": None if peak is None else round(fpt * tok_s / peak, 4),
                "peak_flops": peak,
                "peak_of": peak_of,
                "warmup_s": round(warm_s, 1),
            }
        )
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def check_overhead(cfg, args, device: str) -> None:
    bf16 = not args.smoke
    steps = {e: make_step(cfg, e, device, bf16, False) for e in ("rope", "0.75-rope")}
    for fn in steps.values():
        for _ in range(args.warmup):
            fn()
    ratios, base, prope = [], [], []
    for i in range(args.steps):
        order = ("rope", "0.75-rope") if i % 2 == 0 else ("0.75-rope", "rope")
        t = {e: steps[e]() for e in order}
        base.append(t["rope"])
        prope.append(t["0.75-rope"])
        ratios.append(t["0.75-rope"] / t["rope"])
    emit(
        {
            "check": "overhead",
            "preset": args.config,
            "pairs": len(ratios),
            "rope_ms_median": round(statistics.median(base) * 1e3, 2),
            "p_rope_ms_median": round(statistics.median(prope) * 1e3, 2),
            "overhead_median": round(statistics.median(ratios) - 1, 4),
            "goal": "<= 0.02",
        }
    )


def check_data_parallel(args, device: str) -> None:
    import pandas as pd

    from rope_lens import io
    from rope_lens.models.tiny import tiny_model_dir

    with tempfile.TemporaryDirectory(prefix="gpu-dp-") as tmp:
        root = Path(tmp)
        over = {} if args.smoke else {"hidden_size": 512, "intermediate_size": 1024}
        model = str(tiny_model_dir("llama", root / "model", **over))
        common = [
            "--model", model, "--device", device, "--prompts", "shakespeare",
            "--max-len", str(args.dp_max_len), "--batch-size", "1", "--no-progress",
            "--dtype", "float32",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ROPE_LENS_DIST_BACKEND": "gloo"}
        for analysis in ("band-norm", "heads"):
            walls = {}
            for world in (1, 2):
                out = root / f"{analysis}-{world}"
                launch = (
                    [sys.executable, "-m", "rope_lens.cli"]
                    if world == 1
                    else [
                        sys.executable,
                        "-m",
                        "torch.distributed.run",
                        "--standalone",
                        "--nproc_per_node",
                        str(world),
                        "-m",
                        "rope_lens.cli",
                    ]  # fmt: skip
                )
                cmd = [*launch, "analyze", *common, "--analysis", analysis, "--out", str(out)]
                t = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                walls[world] = time.perf_counter() - t
                if proc.returncode != 0:
                    emit({"check": "data_parallel", "analysis": analysis, "world": world,
                          "error": proc.stderr[-1500:]})  # fmt: skip
                    return
            name = analysis.replace("-", "_")
            one, _ = io.load_table(root / f"{analysis}-1" / f"{name}.parquet")
            two, meta = io.load_table(root / f"{analysis}-2" / f"{name}.parquet")
            dev = 0.0
            for col in one.columns:
                if pd.api.types.is_float_dtype(one[col]):
                    a, b = one[col].to_numpy(), two[col].to_numpy()
                    finite = abs(a) < float("inf")
                    rel = abs(a[finite] - b[finite]) / abs(a[finite]).clip(min=1e-12)
                    dev = max(dev, float(rel.max()) if rel.size else 0.0)
            emit(
                {
                    "check": "data_parallel",
                    "analysis": analysis,
                    "device": device,
                    "world_size": meta.get("world_size"),
                    "wall_s_1_process": round(walls[1], 1),
                    "wall_s_2_processes": round(walls[2], 1),
                    "max_rel_deviation": dev,
                    "rows": len(one),
                }
            )


def main() -> None:
    from rope_lens.train.config import get_preset, override

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="toy sizes on CPU, fp32")
    ap.add_argument("--config", default="gpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also compile in --smoke")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--dp-max-len", type=int, default=256)
    ap.add_argument("--only", default="train,overhead,data_parallel")
    args = ap.parse_args()
    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    if args.smoke:
        torch.set_num_threads(1)
        args.overrides = SMOKE_SET + args.overrides
        args.dp_max_len = min(args.dp_max_len, 24)
    cfg = override(get_preset(args.config), args.overrides)
    only = set(args.only.split(","))
    if "train" in only:
        check_train(cfg, args, device)
    if "overhead" in only:
        check_overhead(cfg, args, device)
    if "data_parallel" in only:
        check_data_parallel(args, device)


if __name__ == "__main__":
    main()
