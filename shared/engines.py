"""Backfill engines beyond the local process pool: Lambda invokes and the Step Functions map.

- ``lambda``: lists the ingest prefix with ListObjectsV2 (page by page, never the whole
  listing in memory), routes and skips each key with the same :func:`shared.backfill.route`
  as the local engine when the mount is on this machine (metadata read on the mount, no
  content), else routes by the object's first bytes (one ranged GetObject; the function
  skips committed inputs itself), and invokes the worker's function exactly once per
  input, at most ``jobs`` at a time, backing off on throttling only.
- ``stepfunctions``: starts the Distributed Map state machine of template.yaml once per
  worker for a prefix, then polls DescribeExecution and the map runs' item counts.

Both fill the same :class:`shared.backfill.Summary` that the local engine prints.
"""

from __future__ import annotations

import json
import random
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TextIO

from shared.backfill import Progress, Summary, WorkerTally, route
from shared.config import MountConfig
from shared.errors import REFUSED_PATH, UsageError, retryable_error_names
from shared.options import options_for
from shared.outcomes import STATUS_VALUES, Outcome, Status
from shared.worker import SNIFF_BYTES, WorkerSpec

DEFAULT_FUNCTION_PATTERN = "mountworks-{worker}"
THROTTLE_CODES = frozenset({"TooManyRequestsException", "ThrottlingException", "Throttling",
                            "EC2ThrottledException", "ENILimitReachedException"})
RETRYABLE_CODES = THROTTLE_CODES | {"ServiceException", "ResourceNotReadyException", "ResourceConflictException",
                                    "EFSIOException", "EFSMountConnectivityException", "EFSMountTimeoutException"}
MAX_INVOKE_ATTEMPTS = 8
FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 20.0
LAMBDA_MAX_TIMEOUT_SECONDS = 900  # the longest any function may run
INVOKE_READ_TIMEOUT_SECONDS = LAMBDA_MAX_TIMEOUT_SECONDS + 60  # a synchronous Invoke answers within it
# Errors that say the request reached Lambda (or may have) with no answer: the function may
# be running, so the engine never sends the Invoke again; the next backfill skips what committed.
UNANSWERED_ERRORS = frozenset({"ReadTimeoutError", "ConnectionClosedError", "ResponseStreamingError",
                               "ProtocolError"})


def client_config(service: str) -> Any:
    """botocore settings per service.

    ``lambda``: a synchronous Invoke holds the connection for as long as the function runs
    (up to 900 s), so the read timeout is above that, and the SDK never retries: botocore's
    defaults (60 s, then two more attempts) would run a 70 s video three times. The engine
    backs off itself on throttles, which Lambda answers before running anything.
    ``stepfunctions``: StartExecution carries a name, so the SDK's retries are idempotent.
    """
    import importlib

    Config = importlib.import_module("botocore.config").Config  # the CLI's extra, never in an image
    if service == "lambda":
        return Config(read_timeout=INVOKE_READ_TIMEOUT_SECONDS, connect_timeout=10, tcp_keepalive=True,
                      retries={"mode": "standard", "total_max_attempts": 1})
    return Config(connect_timeout=10, read_timeout=60, retries={"mode": "standard", "total_max_attempts": 3})


def aws_client(service: str) -> Any:
    """A boto3 client (credentials, region and ``AWS_ENDPOINT_URL_*`` from the environment)."""
    import importlib

    return importlib.import_module("boto3").client(service, config=client_config(service))


def function_names(specs: list[WorkerSpec], mappings: list[str], pattern: str | None) -> dict[str, str]:
    """Worker -> Lambda function, from ``--function worker=name`` options and a pattern.

    The pattern may use ``{worker}`` (``mountworks-{worker}``); an explicit mapping wins.
    """
    explicit: dict[str, str] = {}
    for mapping in mappings:
        worker, sep, name = mapping.partition("=")
        if not sep or not worker.strip() or not name.strip():
            raise UsageError(f"--function expects WORKER=FUNCTION (got {mapping!r})")
        explicit[worker.strip()] = name.strip()
    known = {s.name for s in specs}
    unknown = sorted(set(explicit) - known)
    if unknown:
        raise UsageError(f"--function names workers that are not selected: {', '.join(unknown)}")
    pattern = pattern or DEFAULT_FUNCTION_PATTERN
    if "{worker}" not in pattern:
        raise UsageError(f"--function-pattern must contain {{worker}} (got {pattern!r})")
    return {s.name: explicit.get(s.name, pattern.format(worker=s.name)) for s in specs}


def list_keys(s3: Any, bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
    """(key, size) of every object under ``prefix``, streamed page by page (1,000 a page)."""
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": 1000}):
        for obj in page.get("Contents", ()):
            key = obj["Key"]
            if not key.endswith("/"):  # folder placeholder objects are not inputs
                yield key, int(obj.get("Size", 0))


@dataclass
class LambdaEngine:
    """Invoke the deployed worker functions for every uncommitted input under a prefix.

    ``cfg`` is the mount on this machine, or None: then keys are routed by their object's
    first bytes (ranged GetObject) and ``ingest_prefix`` / ``bucket_prefix`` say where they are.
    """

    cfg: MountConfig | None
    specs: list[WorkerSpec]
    bucket: str
    functions: dict[str, str]
    lambda_client: Any
    s3_client: Any
    jobs: int = 16
    options: Mapping[str, Any] | None = None
    retry_failed: bool = False
    dry_run: bool = False
    max_attempts: int = MAX_INVOKE_ATTEMPTS
    first_backoff: float = FIRST_BACKOFF_SECONDS
    ingest_prefix: str = "ingest"
    bucket_prefix: str = ""
    # worker -> invocations at once (its deployed maximum concurrency); ``jobs`` bounds them all
    concurrency: Mapping[str, int] | None = None

    def __post_init__(self) -> None:
        if self.cfg is not None:
            self.ingest_prefix, self.bucket_prefix = self.cfg.ingest_prefix, self.cfg.bucket_prefix

    def key_prefix(self, prefix: str = "") -> str:
        parts = [p for p in (self.bucket_prefix, self.ingest_prefix, prefix.strip("/")) if p]
        return "/".join(parts) + ("/" if not prefix or prefix.endswith("/") else "")

    def rel_path(self, key: str) -> str:
        """An S3 key -> the path relative to the mount root that the router expects."""
        if self.bucket_prefix:
            return key[len(self.bucket_prefix) + 1 :]
        return key

    def route(self, key: str, size: int, options: Mapping[str, Any],
              summary: Summary) -> list[tuple[WorkerSpec, Mapping[str, Any]]]:
        """(worker, options) to invoke for one key: through the mount when there is one."""
        rel = self.rel_path(key)
        if self.cfg is not None:
            return [(spec, item.options) for spec, item in route(self.cfg, self.specs, rel, options,
                                                                  self.retry_failed, summary)]
        name = rel.rsplit("/", 1)[-1]
        if any(s.is_companion(name) for s in self.specs):
            summary.companions += 1
            return []
        want = max((s.sniff_bytes for s in self.specs), default=SNIFF_BYTES)  # as the mount's router reads
        head = b"" if size == 0 else self.s3_client.get_object(
            Bucket=self.bucket, Key=key, Range=f"bytes=0-{want - 1}")["Body"].read()
        chosen = [s for s in self.specs if s.accepts(head)]
        if not chosen:
            summary.unrouted += 1
        return [(spec, options_for(spec.name, options)) for spec in chosen]

    def run(self, prefix: str = "", progress: Progress | None = None) -> Summary:
        if self.jobs < 1:
            raise UsageError("--jobs must be at least 1")
        summary = Summary(engine="lambda")
        progress = progress or Progress(sys.stderr, enabled=False)
        options = dict(self.options or {})
        in_flight: dict[Future[Outcome], str] = {}  # -> its worker
        limits = dict(self.concurrency or {})

        def full(worker: str) -> bool:
            mine = sum(1 for w in in_flight.values() if w == worker)
            return len(in_flight) >= self.jobs or mine >= limits.get(worker, self.jobs)

        def collect() -> None:
            done, _ = wait(set(in_flight), return_when=FIRST_COMPLETED)
            for future in done:
                del in_flight[future]
            self._collect(done, summary)

        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="invoke") as pool:
            try:
                for key, size in list_keys(self.s3_client, self.bucket, self.key_prefix(prefix)):
                    summary.files += 1
                    for spec, item_options in self.route(key, size, options, summary):
                        if self.dry_run:
                            summary.would_process += 1
                            continue
                        while full(spec.name):
                            collect()
                        in_flight[pool.submit(self.invoke, spec, key, item_options, summary)] = spec.name
                    progress.update(summary)
                while in_flight:
                    collect()
                    progress.update(summary)
            except KeyboardInterrupt:
                summary.interrupted = True
                for future in in_flight:
                    future.cancel()
        progress.update(summary, final=True)
        return summary

    @staticmethod
    def _collect(done: set[Future[Outcome]], summary: Summary) -> None:
        for future in done:
            summary.add(future.result())

    def invoke(self, spec: WorkerSpec, key: str, options: Mapping[str, Any], summary: Summary) -> Outcome:
        """One synchronous invoke, sent again (with jittered backoff) only when Lambda throttled it.

        An Invoke that got no answer (read timeout, dropped connection) may be running: it
        is reported retryable, never sent twice (the next backfill skips it once committed).
        """
        function = self.functions[spec.name]
        payload = json.dumps({"Key": key, "options": dict(options)}).encode()
        started = time.monotonic()
        delay = self.first_backoff
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self.lambda_client.invoke(FunctionName=function, InvocationType="RequestResponse",
                                                     Payload=payload)
            except Exception as exc:  # botocore's ClientError, told apart by its ``response``
                error = getattr(exc, "response", None)
                if not isinstance(error, dict):
                    if type(exc).__name__ in UNANSWERED_ERRORS:
                        return Outcome(Status.RETRYABLE, key, spec.name, code="invoke-unanswered",
                                       message=f"{function}: no answer ({exc}); it may have run: "
                                               "backfill again to pick it up", duration_ms=_ms(started))
                    raise
                code = str(error.get("Error", {}).get("Code", ""))
                if code in THROTTLE_CODES and attempt < self.max_attempts:
                    summary.throttled += 1  # an int increment under the GIL; only a count
                    time.sleep(delay * random.uniform(0.5, 1.5))
                    delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                    continue
                if code in ("ResourceNotFoundException", "AccessDeniedException", "InvalidParameterValueException"):
                    raise UsageError(f"cannot invoke {function} for worker {spec.name}: {exc} "
                                     "(check --function / --function-pattern and your credentials)") from exc
                status = Status.RETRYABLE if code in RETRYABLE_CODES else Status.INTERNAL_ERROR
                return Outcome(status, key, spec.name, code=code or "invoke-failed",
                               message=f"{function}: {exc}", duration_ms=_ms(started))
            return self._outcome(spec, key, function, response, started)
        raise AssertionError("unreachable: the last attempt returns")

    @staticmethod
    def _outcome(spec: WorkerSpec, key: str, function: str, response: Mapping[str, Any],
                 started: float) -> Outcome:
        raw = response["Payload"].read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"errorMessage": raw[:500].decode(errors="replace")}
        if response.get("FunctionError"):
            error_type = str(body.get("errorType", "")) if isinstance(body, dict) else ""
            message = str(body.get("errorMessage", "")) if isinstance(body, dict) else str(body)
            # RetryLater (and DeadlineReached/InputNotVisible raised through it) means "try again"
            retryable = error_type in retryable_error_names() or "Task timed out" in message
            return Outcome(Status.RETRYABLE if retryable else Status.INTERNAL_ERROR, key, spec.name,
                           code=error_type or "function-error", message=f"{function}: {message}",
                           duration_ms=_ms(started))
        results = body.get("results") if isinstance(body, dict) else None
        if not results:
            reason = body.get("refused") if isinstance(body, dict) else None
            return Outcome(Status.REFUSED, key, spec.name, code=REFUSED_PATH,
                           message=str(reason or f"{function} returned no result for this key"),
                           duration_ms=_ms(started))
        first = results[0]
        error = first.get("error") or {}
        status = first.get("status")
        return Outcome(Status(status) if status in STATUS_VALUES else Status.INTERNAL_ERROR, key, spec.name,
                       first.get("run_id"),
                       code=error.get("code"), message=error.get("message") or first.get("reason"),
                       duration_ms=_ms(started))


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


# ------------------------------------------------------------------ Step Functions

FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})


@dataclass
class StepFunctionsEngine:
    """Start the backfill state machine per worker and follow it to the end."""

    state_machine_arn: str
    specs: list[WorkerSpec]
    client: Any
    options: Mapping[str, Any] | None = None
    poll_seconds: float = 10.0
    timeout_seconds: float | None = None

    def start(self, prefix: str, token: str | None = None) -> dict[str, str]:
        """One execution per worker (the state machine maps a worker to its function).

        Each execution is named ``<worker>-<token>``: StartExecution with the same name and
        input returns the running execution, so a retried call never starts a second one.
        """
        token = token or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
        started = {}
        for spec in self.specs:
            payload = {"worker": spec.name, "prefix": prefix.strip("/") + "/" if prefix.strip("/") else "",
                       "options": options_for(spec.name, self.options or {})}
            response = self.client.start_execution(stateMachineArn=self.state_machine_arn,
                                                   name=f"{spec.name}-{token}"[:80], input=json.dumps(payload))
            started[spec.name] = str(response["executionArn"])
        return started

    def progress_of(self, execution_arn: str) -> dict[str, Any]:
        """Execution status plus the item counts of its map runs (ListMapRuns/DescribeMapRun)."""
        described = self.client.describe_execution(executionArn=execution_arn)
        counts: dict[str, int] = {}
        map_runs = []
        try:
            listed = self.client.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
        except Exception:  # an older endpoint (or a mock) without map runs: status only
            listed = []
        for run in listed:
            detail = self.client.describe_map_run(mapRunArn=run["mapRunArn"])
            items = {k: int(v) for k, v in (detail.get("itemCounts") or {}).items() if isinstance(v, int)}
            map_runs.append({"map_run_arn": run["mapRunArn"], "status": detail.get("status"), "items": items})
            for name, value in items.items():
                counts[name] = counts.get(name, 0) + value
        return {"execution_arn": execution_arn, "status": described["status"], "items": counts,
                "map_runs": map_runs, **({"error": described.get("error"), "cause": described.get("cause")}
                                         if described.get("error") else {})}

    def run(self, prefix: str = "", stream: TextIO | None = None) -> tuple[Summary, list[dict[str, Any]]]:
        summary = Summary(engine="stepfunctions")
        executions = self.start(prefix)
        deadline = None if self.timeout_seconds is None else time.monotonic() + self.timeout_seconds
        states: dict[str, dict[str, Any]] = {}
        try:
            while True:
                states = {worker: self.progress_of(arn) for worker, arn in executions.items()}
                if stream is not None:
                    line = " | ".join(f"{w}: {s['status']} {s['items'].get('succeeded', 0)}/"
                                      f"{s['items'].get('total', '?')}" for w, s in states.items())
                    stream.write(f"backfill (stepfunctions): {line}\n")
                    stream.flush()
                if all(s["status"] in FINAL_STATES for s in states.values()):
                    break
                if deadline is not None and time.monotonic() > deadline:
                    summary.interrupted = True  # still running in AWS; we only stop watching
                    break
                time.sleep(self.poll_seconds)
        except KeyboardInterrupt:
            summary.interrupted = True
        for worker, state in states.items():
            tally = summary.workers.setdefault(worker, WorkerTally())
            items = state["items"]
            tally.done = items.get("succeeded", 0)
            tally.retryable = items.get("failed", 0) + items.get("timedOut", 0) + items.get("aborted", 0)
            summary.files += items.get("total", 0)
            if state["status"] != "SUCCEEDED" and state["status"] in FINAL_STATES:
                tally.retryable = max(tally.retryable, 1)
                summary.failures.append({"input": state["execution_arn"], "worker": worker, "status": "retryable",
                                         "error": {"code": state.get("error") or state["status"],
                                                   "message": state.get("cause") or f"execution {state['status']}"}})
        return summary, list(states.values())

