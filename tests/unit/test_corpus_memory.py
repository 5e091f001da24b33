"""Streaming a parquet corpus keeps Arrow memory to about one record batch: with pyarrow's
default pre-buffering, ``iter_batches`` kept every row group read so far until the file
closed, so peak memory grew with the corpus (+31 MiB per 100k wiki rows at 100x)."""

import random

import pyarrow as pa
import pyarrow.parquet as pq

from rope_lens.corpus import Texts

ROWS, GROUP, WIDTH = 16_000, 500, 1_000  # 32 row groups, ~16 MB of barely compressible text
LETTERS = "abcdefghij klmnopqrstuvwxyz"


def test_reading_holds_one_batch_not_the_file(tmp_path):
    rng = random.Random(0)
    path = tmp_path / "big.parquet"
    schema = pa.schema([("text", pa.string())])
    with pq.ParquetWriter(path, schema) as w:
        for _ in range(ROWS // GROUP):
            rows = ["".join(rng.choices(LETTERS, k=WIDTH)) for _ in range(GROUP)]
            w.write_table(pa.table({"text": rows}, schema=schema))
    peak = n = 0
    for n, _text in enumerate(Texts(path), 1):
        if n % GROUP == 0:
            peak = max(peak, pa.total_allocated_bytes())
    assert n == ROWS
    # One record batch of text is ~1 MB; pre-buffering kept the row groups read (17 MiB).
    assert peak < 4 * 2**20, f"Arrow held {peak / 2**20:.1f} MiB while streaming"
