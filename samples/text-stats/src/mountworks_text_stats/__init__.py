"""text-stats: line, word and character counts and the most frequent words of UTF-8 text.

A mountworks worker that lives outside the mountworks repository. Its distribution
declares the entry point ``text-stats = "mountworks_text_stats:SPEC"`` in the
``mountworks.workers`` group, so the registry, the CLI and the generic Lambda handler
find it without any change to mountworks.

Cheap to import (this module is loaded to list the workers): the processing lives in
:mod:`.core`, imported the first time an input is processed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mountworks_text_stats import options
from mountworks_text_stats.sniff import is_text
from shared.worker import WorkerSpec

WORKER = options.WORKER
VERSION = "1.0.0"  # part of every run-id: bump it when the outputs change

SPEC = WorkerSpec(
    name=WORKER,
    version=VERSION,
    extensions=frozenset({".txt", ".text", ".md", ".markdown", ".rst", ".log"}),
    sniff=is_text,
    parse_options=options.parse,
    core_module="mountworks_text_stats.core",
)

if TYPE_CHECKING:  # the typed seam: mypy checks this worker's process() against WorkerCore (no import at run time)
    from mountworks_text_stats import core
    from mountworks_text_stats.options import Options
    from shared.worker import WorkerCore

    _core: WorkerCore[Options] = core

__all__ = ["SPEC", "VERSION", "WORKER"]
