"""Lambda entry point of parquet-normalize (``workers.parquet_normalize.handler.handler``)."""

from __future__ import annotations

from shared.runtime import make_handler
from workers.parquet_normalize import SPEC

handler = make_handler(SPEC)
