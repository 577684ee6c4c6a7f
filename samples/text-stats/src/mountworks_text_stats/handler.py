"""Lambda entry point of text-stats: ``mountworks_text_stats.handler.handler``.

The runtime does the rest: every trigger shape, path confinement, the run-id, the
claim, the commit, metrics and logs.
"""

from __future__ import annotations

from mountworks_text_stats import SPEC
from shared.runtime import make_handler

handler = make_handler(SPEC)
