"""Streaming corpora: peak RSS and tokens/s of `rope-lens analyze` as the corpus grows.

The wiki corpus (10,033 lead sections) is repeated k times into one parquet file (written a
row group at a time, so the writer never holds the corpus), then a fresh process runs
`rope-lens analyze --prompts FILE.parquet` (band norms, tiny random Llama, char tokenizer) on
it. Peak RSS is the child's own ru_maxrss; tokens/s is counted tokens over the analysis' own
wall time (tokenization included). With ``--in-memory`` the same texts also run as a .txt
file (the list path) for contrast.

    python analyses/benchmark_streaming.py --scales 1,10,100

Numbers from a run are in docs/benchmarks.md ("Streaming corpora").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def wiki_texts() -> list[str]:
    from rope_lens.inputs import load_texts

    return load_texts("wiki")


def write_parquet(path: Path, texts: list[str], k: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("text", pa.string())])
    with pq.ParquetWriter(path, schema) as w:
        for _ in range(k):
            w.write_table(pa.table({"text": texts}, schema=schema), row_group_size=2048)


def write_txt(path: Path, texts: list[str], k: int) -> None:
    with open(path, "w") as fh:
        for _ in range(k):
            fh.write("\n".join(t.replace("\n", " ") for t in texts) + "\n")


CHILD = (
    "import resource, sys\n"
    "from rope_lens import cli\n"
    "rc = cli.main(sys.argv[1:])\n"
    "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def run(model: str, prompts: Path, out: Path, args) -> dict:
    """One `rope-lens analyze` in a fresh process; its own peak RSS and throughput."""
    from rope_lens import io

    cmd = [
        sys.executable, "-c", CHILD, "analyze", "--model", model,
        "--prompts", str(prompts), "--out", str(out), "--device", "cpu",
        "--max-len", str(args.max_len), "--batch-size", str(args.batch_size),
        "--threads", str(args.threads), "--quiet", "--layers", "0", "--force",
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    kib = int(proc.stderr.rsplit("PEAK_RSS_KIB", 1)[1].split()[0])
    df, meta = io.load_table(out / "band_norm.parquet")
    n_tokens = int(df.n_tokens.max())
    return {
        "peak_rss_mib": round(kib / 1024, 1),
        "tokens": n_tokens,
        "analysis_s": meta["seconds"],
        "tokens_per_s": round(n_tokens / meta["seconds"]),
        "process_wall_s": round(wall, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--scales", default="1,10,100", help="repetitions of the wiki corpus")
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--in-memory", action="store_true", help="also run the .txt (list) path")
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args()
    from rope_lens.models.tiny import tiny_model_dir

    texts = wiki_texts()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        root = Path(tmp)
        model = str(tiny_model_dir("llama", root / "model"))
        for k in (int(s) for s in args.scales.split(",")):
            kinds = ["parquet", "txt"] if args.in_memory else ["parquet"]
            for kind in kinds:
                src = root / f"wiki-x{k}.{kind}"
                (write_parquet if kind == "parquet" else write_txt)(src, texts, k)
                row = {
                    "scale": k,
                    "source": kind,
                    "mib_on_disk": round(src.stat().st_size / 2**20, 1),
                }
                row.update(run(model, src, root / f"out-{kind}-{k}", args))
                rows.append(row)
                print(json.dumps(row), flush=True)
                src.unlink()
    add_ratios(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


def add_ratios(rows: list[dict]) -> None:
    """Peak RSS and tokens/s of every row against the smallest scale of its source in the
    same run (the machine's load differs between runs, so only same-run ratios compare)."""
    for row in rows:
        base = min((r for r in rows if r["source"] == row["source"]), key=lambda r: r["scale"])
        row["peak_rss_vs_smallest"] = round(row["peak_rss_mib"] / base["peak_rss_mib"], 3)
        row["tokens_per_s_vs_smallest"] = round(row["tokens_per_s"] / base["tokens_per_s"], 3)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
