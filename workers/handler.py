"""A Lambda entry point for any registered worker, named by ``MOUNTWORKS_WORKER``.

For a worker installed from another distribution into a mountworks image: set the
function's command to ``workers.handler.handler`` and ``MOUNTWORKS_WORKER`` to its name.
The in-repo workers have their own ``workers.<module>.handler.handler``, which imports
nothing but that worker.
"""

from __future__ import annotations

from shared.config import worker_from_env
from shared.runtime import make_handler
from workers.registry import get_worker

handler = make_handler(get_worker(worker_from_env()))
