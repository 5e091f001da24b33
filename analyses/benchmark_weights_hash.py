"""Weights identity: time to check a model folder the first time (every byte hashed) and the
second time (the cached digests, one ``stat`` per file), same run.

A table is reused only when the sha256 of every config and weight file of its model matches
(``rope_lens.identity``); the digests are cached per file by size, mtime_ns, ctime_ns and
inode. The folder is either built here (``--gib`` GiB in ``--shards`` safetensors-named
files, random bytes, or sparse with ``--sparse``: then the first check measures the hash
itself, not the disk) or an existing model folder (``--folder``).

    python analyses/benchmark_weights_hash.py --gib 16 --shards 4 --sparse
    python analyses/benchmark_weights_hash.py --folder ~/.cache/rope-lens/models/qwen2.5-coder-0.5b

Numbers from a run are in docs/scale.md ("Reusing results").
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

CHUNK = 1 << 26


def build(folder: Path, gib: float, shards: int, sparse: bool) -> None:
    """``shards`` files of ``gib / shards`` GiB each, backdated an hour (a folder written long
    before it is analysed: files modified in the last 2 s are never cached)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    size = int(gib * 2**30 / shards)
    for i in range(shards):
        path = folder / f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        with open(path, "wb") as fh:
            if sparse:
                fh.truncate(size)
            else:
                left = size
                while left:
                    n = min(CHUNK, left)
                    fh.write(os.urandom(n))
                    left -= n
    past = time.time() - 3600
    for path in folder.iterdir():
        os.utime(path, (past, past))


def measure(folder: Path) -> dict:
    from rope_lens import identity

    files = [p for p in folder.iterdir() if p.is_file()]
    nbytes = sum(p.stat().st_size for p in files if p.suffix in identity.WEIGHT_SUFFIXES)
    t0 = time.perf_counter()
    first = identity.weights_fingerprint(folder)
    t1 = time.perf_counter()
    second = identity.weights_fingerprint(folder)
    t2 = time.perf_counter()
    assert first == second
    return {
        "folder": str(folder),
        "weight_bytes": nbytes,
        "files": len(files),
        "first_check_s": round(t1 - t0, 3),
        "second_check_s": round(t2 - t1, 6),
        "first_over_second": round((t1 - t0) / max(t2 - t1, 1e-9)),
        "first_gib_per_s": round(nbytes / 2**30 / (t1 - t0), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", default=None, help="an existing model folder to check")
    ap.add_argument("--gib", type=float, default=16.0)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--sparse", action="store_true", help="sparse files (no disk reads)")
    ap.add_argument("--json", default=None, help="append the result to this JSON list")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as tmp:
        os.environ["ROPE_LENS_HASHES"] = cache  # an empty digest cache: a true first check
        if args.folder:
            folder = Path(args.folder).expanduser()
        else:
            folder = Path(tmp) / "model"
            build(folder, args.gib, args.shards, args.sparse)
        result = measure(folder)
        result["built"] = None if args.folder else ("sparse" if args.sparse else "random bytes")
    print(json.dumps(result, indent=1))
    if args.json:
        path = Path(args.json)
        runs = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps([*runs, result], indent=1) + "\n")


if __name__ == "__main__":
    main()
