"""Options of text-stats: how many frequent words to list, and the size limit.

Parsed with :class:`shared.options.OptionReader`, so that an unknown key or a value out
of range is a usage error (exit 2) before any byte of the input is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from shared.options import OptionReader

WORKER = "text-stats"

DEFAULT_TOP = 20
MAX_TOP = 1000
MAX_BYTES = 2_000_000_000  # named limit: a larger input fails as limit-exceeded before it is read
MAX_BYTES_CEILING = 1 << 40


class Options(NamedTuple):
    top: int = DEFAULT_TOP
    max_bytes: int = MAX_BYTES

    def to_manifest(self) -> dict[str, Any]:
        """The normalized options: recorded in the manifest and part of the run-id."""
        return {"top": self.top, "max_bytes": self.max_bytes}


def parse(raw: Mapping[str, Any] | None) -> Options:
    """Options from an event (JSON values) or the CLI (strings); UsageError when invalid."""
    reader = OptionReader(raw, WORKER)
    options = Options(
        top=reader.integer("top", DEFAULT_TOP, lo=1, hi=MAX_TOP),
        max_bytes=reader.integer("max_bytes", MAX_BYTES, lo=1, hi=MAX_BYTES_CEILING),
    )
    reader.finish()
    return options
