"""Name -> worker. Adding a worker is one package under ``workers/`` and one line here.

Each line names the package whose ``__init__`` defines ``SPEC`` (a cheap
:class:`shared.worker.WorkerSpec`); the package's heavy ``core`` module is imported only
when the worker first processes an input.
"""

from __future__ import annotations

import importlib

from shared.errors import UsageError
from shared.worker import WorkerSpec

WORKERS: dict[str, str] = {
    "image-resize": "workers.image_resize",
    "parquet-normalize": "workers.parquet_normalize",
    "pdf-extract": "workers.pdf_extract",
    "video-transcode": "workers.video_transcode",
}


def worker_names() -> list[str]:
    return list(WORKERS)


def get_worker(name: str) -> WorkerSpec:
    module_name = WORKERS.get(name)
    if module_name is None:
        raise UsageError(f"unknown worker {name!r}; available: {', '.join(WORKERS)}")
    spec: WorkerSpec = importlib.import_module(module_name).SPEC
    return spec


def all_workers() -> list[WorkerSpec]:
    return [get_worker(name) for name in WORKERS]
