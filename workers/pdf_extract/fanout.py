"""Payloads for processing one large PDF as page ranges in separate invocations.

``plan("ingest/big.pdf", page_count=2000, range_size=500)`` gives four direct-invocation
payloads (``pages=1-500`` ... ``pages=1501-2000``) and the merge payload
(``ranges=1-500,501-1000,1001-1500,1501-2000``) with the same other options, so that the
merge finds exactly the range runs they commit. A Step Functions state machine runs the
range payloads in a Map state, then the merge in a Task (docs/deploy.md, "Large PDFs").

Cheap to import (no pypdf): the caller that plans usually knows the page count already
(from an earlier ``document.json`` or its own count).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import UsageError
from workers.pdf_extract.options import MAX_RANGES, parse


@dataclass(frozen=True)
class FanOut:
    ranges: list[dict[str, Any]]  # one direct-invocation payload per page range
    merge: dict[str, Any]  # the payload that merges their committed runs


def plan(input_key: str, page_count: int, range_size: int,
         options: Mapping[str, Any] | None = None) -> FanOut:
    """Split pages ``1..page_count`` into ranges of ``range_size`` pages (the last may be shorter)."""
    if page_count < 1 or range_size < 1:
        raise UsageError(f"page_count and range_size must be at least 1 (got {page_count}, {range_size})")
    base = dict(options or {})
    if "pages" in base or "ranges" in base:
        raise UsageError("options for a fan-out must not set pages or ranges: the plan sets them")
    texts = [f"{first}-{min(first + range_size - 1, page_count)}"
             for first in range(1, page_count + 1, range_size)]
    if len(texts) > MAX_RANGES:
        raise UsageError(f"{len(texts)} ranges is more than MAX_RANGES={MAX_RANGES}: use larger ranges")
    merge_options = {**base, "ranges": ",".join(texts)}
    parse(merge_options)  # every payload is valid before anything is sent
    return FanOut(
        ranges=[{"input": input_key, "options": {**base, "pages": text}} for text in texts],
        merge={"input": input_key, "options": merge_options},
    )
