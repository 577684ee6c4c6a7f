"""Mount configuration: where the mount is and what its prefixes are called.

Every setting has an environment variable (what Lambda uses) and can be passed as an
explicit argument (what the CLI and tests use); an explicit argument always wins.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from shared.errors import UsageError

ENV_MOUNT = "MOUNTWORKS_MOUNT"
ENV_INGEST_PREFIX = "MOUNTWORKS_INGEST_PREFIX"
ENV_WORKSPACE_PREFIX = "MOUNTWORKS_WORKSPACE_PREFIX"
ENV_BUCKET_PREFIX = "MOUNTWORKS_BUCKET_PREFIX"
ENV_CLAIM_LEASE = "MOUNTWORKS_CLAIM_LEASE_SECONDS"
ENV_LOG_LEVEL = "MOUNTWORKS_LOG_LEVEL"
ENV_EVENT_BUS = "MOUNTWORKS_EVENT_BUS"  # an EventBridge bus for commit events (name or ARN; unset or empty: off)
ENV_LAMBDA_FUNCTION = "AWS_LAMBDA_FUNCTION_NAME"  # set by the Lambda runtime
ENV_LAMBDA_MEMORY = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"  # MB, set by the Lambda runtime
ENV_WORKER = "MOUNTWORKS_WORKER"  # the worker of the generic handler (workers.handler)
ENV_POWERTOOLS_LOG_LEVEL = "POWERTOOLS_LOG_LEVEL"
ENV_SERVICE_NAME = "POWERTOOLS_SERVICE_NAME"  # Powertools' own names: the template sets them per function
ENV_METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"
ENV_VIDEO_JOBS = "MOUNTWORKS_VIDEO_JOBS"  # local segment-parallel encodes at once (default: CPUs)
ENV_VIDEO_SEGMENT_FUNCTION = "MOUNTWORKS_VIDEO_SEGMENT_FUNCTION"  # the durable fan-out's segment function
ENV_VIDEO_MAX_FANOUT = "MOUNTWORKS_VIDEO_MAX_FANOUT"  # segment invocations in flight per fanned-out input
ENV_FFMPEG = "MOUNTWORKS_FFMPEG"  # an explicit ffmpeg binary
ENV_FFPROBE = "MOUNTWORKS_FFPROBE"  # an explicit ffprobe binary ("" = probe with ffmpeg)
PILLOW_ALLOCATOR_ENV = ("PILLOW_BLOCK_SIZE", "PILLOW_BLOCKS_MAX")  # Pillow's own: an operator's setting wins

# Read by one function or one worker, not by every function: the template sets them where
# they apply (or leaves them to their defaults), never in Globals.
PER_FUNCTION_ENV = frozenset({ENV_WORKER, ENV_POWERTOOLS_LOG_LEVEL, ENV_SERVICE_NAME, ENV_METRICS_NAMESPACE,
                              ENV_VIDEO_JOBS, ENV_VIDEO_SEGMENT_FUNCTION, ENV_VIDEO_MAX_FANOUT, ENV_FFMPEG,
                              ENV_FFPROBE, ENV_LAMBDA_MEMORY})  # the last one: set by Lambda (memory and CPU shares)

DEFAULT_MOUNT_IN_LAMBDA = "/mnt/workspace"
CGROUP_ROOT = Path("/sys/fs/cgroup")
DEFAULT_INGEST_PREFIX = "ingest"
DEFAULT_WORKSPACE_PREFIX = "workspace"
DEFAULT_CLAIM_LEASE_SECONDS = 960.0  # Lambda's longest invocation (900 s) plus a margin


def in_lambda(environ: Mapping[str, str] | None = None) -> bool:
    return bool((os.environ if environ is None else environ).get(ENV_LAMBDA_FUNCTION))


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def log_level(default: str, environ: Mapping[str, str] | None = None) -> str:
    """``MOUNTWORKS_LOG_LEVEL``, else Powertools' ``POWERTOOLS_LOG_LEVEL``, else ``default``."""
    env = _env(environ)
    return env.get(ENV_LOG_LEVEL) or env.get(ENV_POWERTOOLS_LOG_LEVEL) or default


def cli_log_level(default: str, environ: Mapping[str, str] | None = None) -> str:
    """The command line's level: ``MOUNTWORKS_LOG_LEVEL`` (Powertools' variable is for Lambda)."""
    return _env(environ).get(ENV_LOG_LEVEL) or default


def service_name(default: str, environ: Mapping[str, str] | None = None) -> str:
    return _env(environ).get(ENV_SERVICE_NAME) or default


def metrics_namespace(default: str, environ: Mapping[str, str] | None = None) -> str:
    return _env(environ).get(ENV_METRICS_NAMESPACE) or default


def video_jobs(environ: Mapping[str, str] | None = None) -> int:
    """Local segment encodes at once: ``MOUNTWORKS_VIDEO_JOBS``, else one per CPU (:func:`function_cpus`)."""
    try:
        return max(1, int(_env(environ).get(ENV_VIDEO_JOBS, "")))
    except ValueError:
        return function_cpu_count(environ)


def video_segment_function(default: str, environ: Mapping[str, str] | None = None) -> str:
    return _env(environ).get(ENV_VIDEO_SEGMENT_FUNCTION) or default


def video_max_fanout(default: int, environ: Mapping[str, str] | None = None) -> int:
    """Segments the fan-out keeps in flight: the template sets it to the segment function's capacity."""
    try:
        return max(1, int(_env(environ).get(ENV_VIDEO_MAX_FANOUT, "")))
    except ValueError:
        return default


def ffmpeg_override(environ: Mapping[str, str] | None = None) -> str | None:
    """An explicit ffmpeg binary, or None to look on PATH."""
    return _env(environ).get(ENV_FFMPEG) or None


def ffprobe_override(environ: Mapping[str, str] | None = None) -> str | None:
    """None: look for ffprobe; "": there is none, probe with ffmpeg; else that binary."""
    return _env(environ).get(ENV_FFPROBE)


def pillow_allocator_set(environ: Mapping[str, str] | None = None) -> bool:
    """True when the operator tuned Pillow's block allocator themselves (then we keep out)."""
    env = _env(environ)
    return any(name in env for name in PILLOW_ALLOCATOR_ENV)


def mount_configured(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``MOUNTWORKS_MOUNT`` names the mount (engines that can work without one ask)."""
    return bool(_env(environ).get(ENV_MOUNT))


def key_layout(ingest_prefix: str | None = None, bucket_prefix: str | None = None,
               environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(ingest prefix, bucket prefix) of the keys, for a machine that has no mount."""
    env = _env(environ)
    ingest = _prefix(ingest_prefix or env.get(ENV_INGEST_PREFIX) or DEFAULT_INGEST_PREFIX, "ingest")
    raw_bucket = bucket_prefix if bucket_prefix is not None else env.get(ENV_BUCKET_PREFIX, "")
    return ingest, raw_bucket.strip("/")
def function_memory_mb(environ: Mapping[str, str] | None = None, cgroup: Path | None = None) -> int:
    """The memory this process may use, in MB: the Lambda function's ``MemorySize``; locally
    the container's limit (cgroup v2 ``memory.max``, v1 ``memory.limit_in_bytes``), else the
    machine's physical memory."""
    try:
        return max(1, int(_env(environ).get(ENV_LAMBDA_MEMORY, "")))
    except ValueError:
        pass
    physical = (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) >> 20
    limit = _cgroup_memory_bytes(CGROUP_ROOT if cgroup is None else cgroup)
    return max(1, min(physical, limit >> 20) if limit is not None else physical)


def _cgroup_memory_bytes(cgroup: Path) -> int | None:
    """The cgroup's memory limit, None where it sets none (v2 "max"; v1's huge "unlimited")."""
    for name in ("memory.max", "memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            return int((cgroup / name).read_text().strip())
    return None


LAMBDA_MB_PER_VCPU = 1769  # Lambda gives a function one vCPU per 1,769 MB of memory


def function_cpus(environ: Mapping[str, str] | None = None, cgroup: Path = CGROUP_ROOT) -> float:
    """The CPUs this process can keep busy: in Lambda the function's share (one vCPU per
    1,769 MB: 2 GB is 1.16, whatever the CPUs it sees); locally the container's CPU quota
    (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), never more than the CPUs it may run
    on. A container limited to 2 CPUs on a 64-CPU host would otherwise start 64 of anything."""
    visible = float(len(os.sched_getaffinity(0)))
    try:
        return max(1.0, min(visible, int(_env(environ).get(ENV_LAMBDA_MEMORY, "")) / LAMBDA_MB_PER_VCPU))
    except ValueError:
        pass
    quota = _cgroup_quota(cgroup)
    return max(1.0, min(visible, quota)) if quota is not None else visible


def function_cpu_count(environ: Mapping[str, str] | None = None) -> int:
    """:func:`function_cpus` as a number of processes to run at once (one at least)."""
    return max(1, round(function_cpus(environ)))


def _cgroup_quota(cgroup: Path) -> float | None:
    """CPUs of the cgroup's quota (quota over period), None where it sets none."""
    with contextlib.suppress(OSError, ValueError):
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]  # v2: "max 100000" or "200000 100000"
        return None if quota == "max" else int(quota) / int(period)
    with contextlib.suppress(OSError, ValueError):
        v1_quota = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())  # -1: none
        v1_period = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
        return v1_quota / v1_period if v1_quota > 0 and v1_period > 0 else None
    return None


def worker_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The worker that ``workers.handler.handler`` serves."""
    name = (os.environ if environ is None else environ).get(ENV_WORKER, "").strip()
    if not name:
        raise UsageError(f"{ENV_WORKER} is not set: name the worker this function runs (e.g. image-resize)")
    return name


def _prefix(value: str, what: str) -> str:
    cleaned = value.strip().strip("/")
    if not cleaned or cleaned in (".", "..") or "\x00" in cleaned or ".." in cleaned.split("/"):
        raise UsageError(f"{what} prefix {value!r} must be a plain relative folder name such as 'ingest'")
    return cleaned


class MountConfig(NamedTuple):
    """The mount root and the names of its two prefixes.

    ``bucket_prefix`` is the S3 key prefix that the mount root maps to (empty when the
    file system covers the whole bucket); event keys are taken relative to it.
    """

    root: Path
    ingest_prefix: str = DEFAULT_INGEST_PREFIX
    workspace_prefix: str = DEFAULT_WORKSPACE_PREFIX
    bucket_prefix: str = ""
    claim_lease_seconds: float = DEFAULT_CLAIM_LEASE_SECONDS
    event_bus: str = ""  # where commit events go ("" = no events); see shared/commit_events.py

    @property
    def ingest_dir(self) -> Path:
        return self.root / self.ingest_prefix

    @property
    def workspace_dir(self) -> Path:
        return self.root / self.workspace_prefix

    def worker_dir(self, worker: str) -> Path:
        return self.workspace_dir / worker

    @classmethod
    def load(
        cls,
        root: str | Path | None = None,
        *,
        ingest_prefix: str | None = None,
        workspace_prefix: str | None = None,
        bucket_prefix: str | None = None,
        claim_lease_seconds: float | None = None,
        event_bus: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> MountConfig:
        """Build the configuration: explicit arguments, then ``MOUNTWORKS_*``, then defaults."""
        env = os.environ if environ is None else environ
        lambda_mode = in_lambda(env)
        raw_root = str(root) if root is not None else env.get(ENV_MOUNT)
        if not raw_root:
            if not lambda_mode:
                raise UsageError(f"no mount root: pass --root DIR or set {ENV_MOUNT}")
            raw_root = DEFAULT_MOUNT_IN_LAMBDA
        if lambda_mode and not raw_root.startswith("/mnt/"):
            raise UsageError(f"in Lambda the mount root must start with /mnt/ (got {raw_root!r})")
        resolved = Path(raw_root).expanduser().resolve()
        if not resolved.is_dir():
            raise UsageError(f"mount root {raw_root!r} is not a directory")
        ingest = _prefix(ingest_prefix or env.get(ENV_INGEST_PREFIX) or DEFAULT_INGEST_PREFIX, "ingest")
        workspace = _prefix(
            workspace_prefix or env.get(ENV_WORKSPACE_PREFIX) or DEFAULT_WORKSPACE_PREFIX, "workspace"
        )
        if ingest == workspace or ingest.startswith(workspace + "/") or workspace.startswith(ingest + "/"):
            raise UsageError(f"the ingest ({ingest!r}) and workspace ({workspace!r}) prefixes must not overlap")
        raw_bucket = bucket_prefix if bucket_prefix is not None else env.get(ENV_BUCKET_PREFIX, "")
        lease_text = env.get(ENV_CLAIM_LEASE)
        lease = claim_lease_seconds if claim_lease_seconds is not None else (
            float(lease_text) if lease_text else DEFAULT_CLAIM_LEASE_SECONDS
        )
        if lease <= 0:
            raise UsageError(f"the claim lease must be positive (got {lease})")
        return cls(
            root=resolved,
            ingest_prefix=ingest,
            workspace_prefix=workspace,
            bucket_prefix=raw_bucket.strip("/"),
            claim_lease_seconds=lease,
            event_bus=(event_bus if event_bus is not None else env.get(ENV_EVENT_BUS, "")).strip(),
        )
