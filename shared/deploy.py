"""What one worker's deployment needs beyond its ``SPEC``: pure data, read only at build time.

Each worker package has a ``deploy.py`` with ``DEPLOY = DeployParts(...)``;
``container/render.py`` (``make deploy-files``) turns the registry, each worker's ``SPEC``
(name, extensions) and its ``DEPLOY`` into the worker's resources in ``template.yaml``, its
stages in ``container/Dockerfile`` and ``container/requirements/<worker>.in``. Nothing
imports a ``deploy.py`` at run time, so it costs no cold start. This module imports no
worker.
"""

from __future__ import annotations

from typing import NamedTuple

# The line every image's requirements start with (the Lambda runtime glue: logging,
# metrics, SQS partial batches), ahead of the worker's own DeployParts.requirements.
COMMON_REQUIREMENTS: tuple[str, ...] = (
    "# Shared by every image: the Lambda runtime glue (logging, metrics, SQS partial batches).",
    "aws-lambda-powertools>=3.0",
)


class DeployParts(NamedTuple):
    """One worker's Lambda function, queue and image settings.

    ``requirements`` are the lines of ``container/requirements/<worker>.in`` after the
    shared ones (``#`` comments allowed; keep them within ``pyproject.toml``'s ranges).
    ``dockerfile_lines`` go right after the ``FROM`` of the worker's runtime stage (for
    example a ``COPY --from=`` of a binary). ``handler`` is the handler's path inside the
    worker's package: the command is ``<package>.<handler>``. Capacity (memory, batch sizes,
    concurrency) is per worker because one video invocation is worth hundreds of images.
    """

    memory_mb: int
    timeout_seconds: int
    ephemeral_storage_mb: int = 512
    # Messages per invocation from the worker's SQS queue.
    batch_size: int = 1
    # Most invocations at once: the queue's MaximumConcurrency, the backfill's MaxConcurrency
    # for this worker, and its reserved concurrency when the stack reserves it.
    max_concurrency: int = 10
    # Inputs per invocation in a Distributed Map backfill (the ItemBatcher's MaxItemsPerBatch).
    backfill_batch_size: int = 20
    requirements: tuple[str, ...] = ()
    dockerfile_lines: tuple[str, ...] = ()
    handler: str = "handler.handler"
