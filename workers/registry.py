"""Name -> worker: the in-repo workers (one line each) and the installed ones.

An in-repo worker is one package under ``workers/`` whose ``__init__`` defines ``SPEC``
(a cheap :class:`shared.worker.WorkerSpec`) and one line in :data:`WORKERS`. A worker
from another distribution registers itself through the ``mountworks.workers``
entry-point group (``text-stats = "mountworks_text_stats:SPEC"``): the entry point's
name is the worker's name. On a clash the in-repo worker wins.

The heavy ``core`` module of a worker is imported only when it first processes an input;
entry points are looked up only when a name is not an in-repo worker's, so an in-repo
lookup never scans the installed distributions.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING

from shared.errors import UsageError
from shared.worker import WorkerSpec, spec_problems

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

ENTRY_POINT_GROUP = "mountworks.workers"

WORKERS: dict[str, str] = {
    "image-resize": "workers.image_resize",
    "parquet-normalize": "workers.parquet_normalize",
    "pdf-extract": "workers.pdf_extract",
    "video-transcode": "workers.video_transcode",
}


@functools.cache
def installed_entry_points() -> dict[str, EntryPoint]:
    """The ``mountworks.workers`` entry points of the installed distributions, by name."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def worker_names() -> list[str]:
    return list(WORKERS) + sorted(n for n in installed_entry_points() if n not in WORKERS)


def _checked(spec: object, name: str, origin: str) -> WorkerSpec:
    if not isinstance(spec, WorkerSpec):
        raise UsageError(f"worker {name!r} ({origin}) is a {type(spec).__name__}, not a shared.worker.WorkerSpec")
    problems = spec_problems(spec)
    if spec.name != name:
        problems.insert(0, f"its SPEC is named {spec.name!r}")
    if problems:
        raise UsageError(f"worker {name!r} ({origin}) is not usable: {'; '.join(problems)}")
    return spec


def get_worker(name: str) -> WorkerSpec:
    module_name = WORKERS.get(name)
    if module_name is not None:
        return _checked(importlib.import_module(module_name).SPEC, name, f"module {module_name}")
    entry_point = installed_entry_points().get(name)
    if entry_point is None:
        raise UsageError(f"unknown worker {name!r}; available: {', '.join(worker_names())}")
    origin = f"entry point {entry_point.value} of {getattr(entry_point.dist, 'name', 'a distribution')}"
    try:
        spec = entry_point.load()
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"worker {name!r} ({origin}) cannot be loaded: {type(exc).__name__}: {exc}") from exc
    return _checked(spec, name, origin)


def all_workers() -> list[WorkerSpec]:
    return [get_worker(name) for name in worker_names()]


def deployed_concurrency(name: str) -> int | None:
    """The most invocations of a worker's function at once, as its ``deploy.py`` sets it
    (the queue's maximum concurrency): a Lambda backfill keeps to it. None for a worker
    deployed outside this repository's template."""
    module_name = WORKERS.get(name)
    if module_name is None:
        return None
    try:
        deploy = importlib.import_module(module_name + ".deploy").DEPLOY
    except ImportError:
        return None
    return int(deploy.max_concurrency)
