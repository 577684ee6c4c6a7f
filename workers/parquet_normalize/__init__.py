"""parquet-normalize: messy CSV/TSV/JSON Lines/Parquet in, clean typed zstd Parquet out.

This module is imported on every cold start and by the backfill router, so it holds
only the registration and the content sniff; pyarrow lives in :mod:`.core`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.worker import WorkerSpec
from workers.parquet_normalize.options import parse
from workers.parquet_normalize.sniff import SNIFF_WINDOW, sniff

# Schema contracts that sit beside an input: configuration, never inputs themselves.
CONTRACT_SUFFIXES = (".schema.json", ".schema.yaml", ".schema.yml")


SPEC = WorkerSpec(
    name="parquet-normalize",
    version="1.1.0",  # 1.1: inferred numbers never take a leading zero (codes stay strings); title blocks skipped
    extensions=frozenset({".csv", ".tsv", ".tab", ".txt", ".jsonl", ".ndjson", ".json", ".parquet", ".pq",
                          ".gz", ".zst", ".bz2"}),
    sniff=sniff,
    sniff_bytes=SNIFF_WINDOW,
    parse_options=parse,
    core_module="workers.parquet_normalize.core",
    companions=CONTRACT_SUFFIXES,
)

if TYPE_CHECKING:  # the typed seam: mypy checks this worker's process() against WorkerCore
    from shared.worker import WorkerCore
    from workers.parquet_normalize import core
    from workers.parquet_normalize.options import Options

    _core: WorkerCore[Options] = core
