"""The one path every input takes, from the Lambda handler and the CLI alike.

    work item -> confined input -> wait until visible -> "already committed?" (no content
    read) -> hash -> run-id -> claim -> worker core -> outputs -> manifest (commit) -> outcome

:func:`execute` is that path; :func:`make_handler` wraps it for Lambda (every trigger,
SQS partial batch responses, metrics); the CLI calls :func:`execute` directly.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from shared import observability as obs
from shared.config import MountConfig, in_lambda
from shared.errors import (
    EXIT_DONE,
    EXIT_INTERNAL,
    EXIT_PERMANENT,
    EXIT_RETRYABLE,
    EXIT_USAGE,
    ClaimHeld,
    InputNotVisible,
    MountworksError,
    PermanentInputError,
    RefusedPath,
    RetryableError,
    UsageError,
)
from shared.events import WorkItem, is_sqs_event, sqs_body_items, work_items
from shared.paths import InputRef, resolve_input
from shared.runs import (
    ERROR_RECORD,
    ERROR_SCHEMA,
    MANIFEST,
    MANIFEST_SCHEMA,
    Claim,
    Commit,
    OutputDir,
    RunLayout,
    acquire_claim,
    clear_torn_commits,
    commit_record,
    hash_file,
    read_commit,
    release_claim,
    run_id_for,
    stat_fingerprint,
    still_holds,
)
from shared.worker import Deadline, InputFile, RunContext, WorkerSpec

VISIBILITY_FIRST_WAIT = 0.05
VISIBILITY_MAX_WAIT = 2.0
DEADLINE_MARGIN_SECONDS = 5.0  # stop waiting/working this long before Lambda would kill us
CLAIM_GRACE_SECONDS = 30.0  # a claim outlives its invocation's deadline by this much
MIN_NAME_BUDGET = 32  # room a run directory must leave under the key limit (commit record, claims, short names)


class Outcome(NamedTuple):
    """How one input ended; maps to an exit code, a Lambda result and a metric."""

    status: str  # done, already-done, failed, already-failed, retryable, skipped, refused, internal-error
    input: str
    worker: str
    run_id: str | None = None
    record: dict[str, Any] | None = None
    code: str | None = None
    message: str | None = None
    duration_ms: float = 0.0
    extra: Mapping[str, Any] = MappingProxyType({})  # read-only: one shared empty default

    @property
    def exit_code(self) -> int:
        return {
            "done": EXIT_DONE,
            "already-done": EXIT_DONE,
            "skipped": EXIT_DONE,
            "failed": EXIT_PERMANENT,
            "already-failed": EXIT_PERMANENT,
            "retryable": EXIT_RETRYABLE,
            "refused": EXIT_USAGE,
        }.get(self.status, EXIT_INTERNAL)

    @property
    def committed(self) -> bool:
        return self.status in ("done", "already-done", "failed", "already-failed")

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"input": self.input, "worker": self.worker, "status": self.status}
        if self.run_id:
            out["run_id"] = self.run_id
        if self.code:
            out["error"] = {"code": self.code, "message": self.message}
        elif self.message:
            out["reason"] = self.message
        return out


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wait_until_visible(path: Path, deadline: Deadline, wait_seconds: float | None) -> os.stat_result:
    """Stat the input, waiting with backoff while it is not visible yet.

    Bounded by ``wait_seconds`` (CLI ``--wait``) or by the invocation's remaining time less
    a margin, whichever is shorter; then the input is retryable, never a permanent error.
    """
    started = time.monotonic()
    pause = VISIBILITY_FIRST_WAIT
    while True:
        try:
            return path.stat()
        except FileNotFoundError:
            pass
        waited = time.monotonic() - started
        budget = float("inf") if wait_seconds is None else wait_seconds - waited
        remaining = deadline.remaining()
        if remaining is not None:
            budget = min(budget, remaining - DEADLINE_MARGIN_SECONDS)
        if budget <= 0 or budget == float("inf"):
            raise InputNotVisible(f"input is not visible on the mount (waited {waited:.1f}s); try again later")
        time.sleep(min(pause, budget))
        pause = min(pause * 2, VISIBILITY_MAX_WAIT)


def _identity(spec: WorkerSpec, ref: InputRef, options: Mapping[str, Any], run_id: str,
              source: InputFile | None, invocation: str) -> dict[str, Any]:
    return {
        "worker": spec.name,
        "worker_version": spec.version,
        "run_id": run_id,
        "input": {"path": ref.rel.as_posix(), "size": source.size if source else None,
                  "sha256": source.sha256 if source else None},
        "options": dict(options),
        "invocation": invocation,
    }


def _committed_outcome(spec: WorkerSpec, ref: InputRef, commit: Commit) -> Outcome:
    record = commit.record
    if commit.failed:
        error = record.get("error") or {}
        return Outcome("already-failed", str(ref), spec.name, record.get("run_id"), record,
                       code=error.get("code"), message=error.get("message"))
    return Outcome("already-done", str(ref), spec.name, record.get("run_id"), record)


def execute(
    spec: WorkerSpec,
    ref: InputRef,
    raw_options: Mapping[str, Any] | None,
    cfg: MountConfig,
    *,
    deadline: Deadline | None = None,
    invocation: str = "local",
    wait_seconds: float | None = None,
    retry_failed: bool = False,
) -> Outcome:
    """Process one input with one worker, exactly once across any number of callers.

    Permanent input errors are committed as ``error.json`` and returned as ``failed``;
    retryable conditions and refusals come back as outcomes; a bug propagates.
    """
    deadline = deadline or Deadline(None)
    started = time.monotonic()
    parsed_options = spec.parse_options(raw_options)
    options = parsed_options.to_manifest()
    path = resolve_input(cfg, ref)
    st = wait_until_visible(path, deadline, wait_seconds)
    if not path.is_file():
        raise RefusedPath(f"{ref} is not a regular file")
    layout = RunLayout(cfg, spec.name, ref)
    fingerprint = stat_fingerprint(spec.name, spec.version, options, st)

    seen = layout.seen_run_id(fingerprint)
    if seen is not None:
        commit = layout.latest_commit(seen)
        if commit is not None and not (retry_failed and commit.failed):
            return _committed_outcome(spec, ref, commit)

    sha256, size = hash_file(path)
    source = InputFile(ref=ref, path=path, size=size, sha256=sha256)
    base_run_id = run_id_for(spec.name, spec.version, options, sha256)
    attempts = layout.attempts(base_run_id)
    attempt = attempts[-1][0] if attempts else 1
    commit = read_commit(attempts[-1][1]) if attempts else None
    if commit is not None:
        if not (retry_failed and commit.failed):
            layout.remember(fingerprint, base_run_id, failed=commit.failed)
            return _committed_outcome(spec, ref, commit)
        attempt += 1
    run_dir = layout.attempt_dir(base_run_id, attempt)
    run_id = run_dir.name
    obs.log_context(run_id=run_id)
    budget = layout.name_budget(run_dir)
    if budget < MIN_NAME_BUDGET:
        raise RefusedPath(
            f"{ref} is too long a key: its outputs would get S3 keys over 1,024 bytes (workspace/{spec.name}/"
            f".../{run_id}/ adds {len(run_id) + len(spec.name) + len(cfg.workspace_prefix) + 3} bytes); shorten "
            f"the input key by at least {MIN_NAME_BUDGET - budget} bytes")

    remaining = deadline.remaining()
    lease = cfg.claim_lease_seconds if remaining is None else remaining + CLAIM_GRACE_SECONDS
    try:
        claim = acquire_claim(run_dir, lease_seconds=lease, check_local=not in_lambda())
    except ClaimHeld:
        commit = layout.latest_commit(base_run_id)
        if commit is not None:
            return _committed_outcome(spec, ref, commit)
        raise
    commit = layout.latest_commit(base_run_id)
    if commit is not None and commit.run_dir == run_dir:
        return _committed_outcome(spec, ref, commit)
    clear_torn_commits(claim)

    identity = _identity(spec, ref, options, run_id, source, invocation)
    started_at = _now_iso()
    out = OutputDir(run_dir, layout.owner_dir, name_budget=budget)
    ctx = RunContext(deadline=deadline, run_id=run_id, request_id=invocation, layout=layout)
    try:
        facts = spec.core().process(source, out, parsed_options, ctx)
    except PermanentInputError as exc:
        record = {"schema": ERROR_SCHEMA, **identity, "error": _error_body(exc),
                  "started_at": started_at, "finished_at": _now_iso(),
                  "duration_ms": round((time.monotonic() - started) * 1000, 1)}
        _commit(claim, ERROR_RECORD, record)
        layout.remember(fingerprint, base_run_id, failed=True)
        return Outcome("failed", str(ref), spec.name, run_id, record, code=exc.code, message=exc.message,
                       duration_ms=record["duration_ms"])
    except BaseException:
        # nothing committed (retryable, a usage error found by the core, a bug): the next
        # attempt must not wait out this invocation's lease
        release_claim(claim)
        raise

    outputs = []
    for output in out.outputs:
        target = run_dir.joinpath(*output.name.split("/"))
        digest, out_size = hash_file(target)
        outputs.append({"path": layout.rel(target), "size": out_size, "sha256": digest,
                        "media_type": output.media_type, **output.facts})
    duration_ms = round((time.monotonic() - started) * 1000, 1)
    manifest = {"schema": MANIFEST_SCHEMA, **identity, "outputs": outputs, "facts": facts,
                "started_at": started_at, "finished_at": _now_iso(), "duration_ms": duration_ms}
    _commit(claim, MANIFEST, manifest)
    layout.remember(fingerprint, base_run_id, failed=False)
    return Outcome("done", str(ref), spec.name, run_id, manifest, duration_ms=duration_ms,
                   extra={"bytes_in": size, "bytes_out": sum(o["size"] for o in outputs)})


def _error_body(exc: MountworksError) -> dict[str, Any]:
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    limit = getattr(exc, "limit", None)
    if limit:
        body["limit"] = limit
    return body


def _commit(claim: Claim, name: str, record: Mapping[str, Any]) -> None:
    if not still_holds(claim):
        raise ClaimHeld(f"run {claim.run_dir.name} was taken over by another process before its commit")
    if not commit_record(claim.run_dir, name, record):
        raise ClaimHeld(f"run {claim.run_dir.name} was committed by another process")


def run_item(
    spec: WorkerSpec,
    item: WorkItem,
    cfg: MountConfig,
    *,
    deadline: Deadline | None = None,
    invocation: str = "local",
    wait_seconds: float | None = None,
    retry_failed: bool = False,
) -> Outcome:
    """:func:`execute` for one work item, with every failure turned into an outcome.

    Only a bug escapes as an ``internal-error`` outcome carrying the traceback in the log.
    """
    obs.log_context(worker=spec.name, input=item.key)
    try:
        if item.refused is not None:
            obs.logger.warning("refused input", extra={"reason": item.refused, "source": item.source})
            return Outcome("refused", item.key, spec.name, code=RefusedPath.code, message=item.refused)
        if item.skipped is not None or item.input is None:
            obs.logger.info("skipped input", extra={"reason": item.skipped, "source": item.source})
            return Outcome("skipped", item.key, spec.name, message=item.skipped)
        outcome = execute(spec, item.input, item.options, cfg, deadline=deadline, invocation=invocation,
                          wait_seconds=wait_seconds, retry_failed=retry_failed)
    except RetryableError as exc:
        outcome = Outcome("retryable", item.key, spec.name, code=exc.code, message=exc.message)
    except PermanentInputError as exc:  # raised before a run directory existed (e.g. a directory)
        outcome = Outcome("failed", item.key, spec.name, code=exc.code, message=exc.message)
    except (RefusedPath, UsageError) as exc:
        outcome = Outcome("refused", item.key, spec.name, code=exc.code, message=exc.message)
    except Exception as exc:  # a bug: logged with its traceback, reported, not committed
        obs.logger.exception("internal error")
        outcome = Outcome("internal-error", item.key, spec.name, code="internal",
                          message=f"{type(exc).__name__}: {exc}",
                          extra={"traceback": traceback.format_exc(limit=8)})
    finally:
        obs.clear_context("input", "run_id")
    level = "info" if outcome.status in ("done", "already-done", "skipped") else "warning"
    getattr(obs.logger, level)(
        "input " + outcome.status,
        extra={"input": outcome.input, "run_id": outcome.run_id, "code": outcome.code,
               "error_message": outcome.message, "duration_ms": outcome.duration_ms},
    )
    obs.record_outcome(outcome.status, bytes_in=int(outcome.extra.get("bytes_in", 0)),
                       bytes_out=int(outcome.extra.get("bytes_out", 0)), duration_ms=outcome.duration_ms)
    return outcome


# ------------------------------------------------------------------------------ Lambda


class RetryLater(RetryableError):
    """Raised out of a handler so that Lambda (or the caller) retries the event."""


def _deadline_of(context: Any) -> Deadline:
    getter = getattr(context, "get_remaining_time_in_millis", None)
    return Deadline(getter() / 1000.0 if callable(getter) else None)


def handle_event(spec: WorkerSpec, event: Any, context: Any, cfg: MountConfig) -> dict[str, Any]:
    """The body of every worker's Lambda handler, for every trigger the contract lists.

    SQS: a partial batch response (``batchItemFailures`` for retryable messages only).
    Other triggers: a response listing each item; if any item is retryable, RetryLater is
    raised after all items ran, so that Lambda's own retry (or the caller) tries again.
    """
    deadline = _deadline_of(context)
    request_id = str(getattr(context, "aws_request_id", "local"))

    def run(item: WorkItem) -> Outcome:
        return run_item(spec, item, cfg, deadline=deadline, invocation=request_id)

    if isinstance(event, Mapping) and is_sqs_event(event):
        return _handle_sqs(event, cfg, run, context)
    try:
        items = work_items(event, cfg)
    except UsageError as exc:
        obs.logger.warning("refused event", extra={"reason": exc.message})
        return {"results": [], "refused": exc.message}
    results = [run(item) for item in items]
    response = {"results": [r.summary() for r in results]}
    bugs = [r for r in results if r.status == "internal-error"]
    if bugs:
        raise RuntimeError(f"{len(bugs)} input(s) hit an internal error: {bugs[0].message}")
    if any(r.status == "retryable" for r in results):
        first = next(r for r in results if r.status == "retryable")
        raise RetryLater(f"{first.input}: {first.message}", code=first.code)
    return response


def _handle_sqs(event: Mapping[str, Any], cfg: MountConfig, run: Callable[[WorkItem], Outcome],
                context: Any) -> dict[str, Any]:
    """SQS through Powertools' BatchProcessor: only retryable messages are reported failed.

    A body that is not an S3 event, or whose key is refused or outside ``ingest/``, is
    reported in ``results`` and acknowledged: retrying it could never succeed.
    """
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    results: list[dict[str, Any]] = []

    def record_handler(record: Any) -> None:
        outcomes = [run(item) for item in sqs_body_items(str(record.body or ""), cfg)]
        results.extend({**o.summary(), "message_id": record.message_id} for o in outcomes)
        pending = [o for o in outcomes if o.status in ("retryable", "internal-error")]
        if pending:
            raise RetryLater(f"{pending[0].input}: {pending[0].message}", code=pending[0].code)

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    response = process_partial_response(event=dict(event), record_handler=record_handler,
                                        processor=processor, context=context)
    return {"batchItemFailures": list(response.get("batchItemFailures", [])), "results": results}


def make_handler(spec: WorkerSpec) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The Lambda entry point of a worker: ``handler = make_handler(SPEC)``.

    Configuration is read from the environment once per cold start; metrics are flushed
    after every invocation (EMF), logs carry the request id, worker, input and run-id.
    """
    obs.enable_metrics(spec.name)
    state: dict[str, MountConfig] = {}

    @obs.metrics.log_metrics(capture_cold_start_metric=True)
    @obs.logger.inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        obs.log_context(worker=spec.name)
        if "cfg" not in state:
            state["cfg"] = MountConfig.load()
        return handle_event(spec, event, context, state["cfg"])

    typed: Callable[[dict[str, Any], Any], dict[str, Any]] = handler
    return typed


def commit_crash(spec: WorkerSpec, ref: InputRef, raw_options: Mapping[str, Any] | None, cfg: MountConfig,
                 message: str) -> Outcome:
    """Commit an ``error.json`` for an input whose worker process died in native code.

    Called by the parent of an isolated child (backfill, run). The dead child's claim is
    taken over at once (same host, process gone), so the record lands in the same run.
    """
    options = spec.parse_options(raw_options).to_manifest()
    path = resolve_input(cfg, ref)
    st = path.stat()
    sha256, size = hash_file(path)
    layout = RunLayout(cfg, spec.name, ref)
    base_run_id = run_id_for(spec.name, spec.version, options, sha256)
    attempts = layout.attempts(base_run_id)
    commit = layout.latest_commit(base_run_id)
    if commit is not None:
        return _committed_outcome(spec, ref, commit)
    run_dir = layout.attempt_dir(base_run_id, attempts[-1][0] if attempts else 1)
    claim = acquire_claim(run_dir, lease_seconds=cfg.claim_lease_seconds, check_local=True)
    clear_torn_commits(claim)
    source = InputFile(ref=ref, path=path, size=size, sha256=sha256)
    now = _now_iso()
    record = {"schema": ERROR_SCHEMA, **_identity(spec, ref, options, run_dir.name, source, "local"),
              "error": {"code": "decoder-crash", "message": message}, "started_at": now, "finished_at": now,
              "duration_ms": 0.0}
    _commit(claim, ERROR_RECORD, record)
    layout.remember(stat_fingerprint(spec.name, spec.version, options, st), base_run_id, failed=True)
    return Outcome("failed", str(ref), spec.name, run_dir.name, record, code="decoder-crash", message=message)
