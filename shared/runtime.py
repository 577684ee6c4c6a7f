"""The one path every input takes, from the Lambda handler and the CLI alike.

    work item -> confined input -> wait until visible -> Run: "already committed?" (no
    content read) -> run-id -> claim -> worker core -> outputs -> commit -> outcome

:func:`execute` is that path (each step a method of :class:`shared.runs.Run`);
:func:`run_item` turns any ending into an :class:`~shared.outcomes.Outcome`, logged and
counted once; :func:`make_handler` wraps it for Lambda (every trigger, SQS partial batch
responses, metrics). The CLI and the backfill's isolated children call :func:`run_item`.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shared import observability as obs
from shared.config import MountConfig, in_lambda
from shared.errors import (
    DECODER_CRASH,
    INTERNAL,
    InputNotVisible,
    PermanentInputError,
    RefusedPath,
    RetryableError,
    RetryLater,
    UsageError,
    environment_fault,
    error_body,
)
from shared.events import WorkItem, is_sqs_event, sqs_body_items, work_items
from shared.outcomes import STATUS_TABLE, LambdaAction, Outcome, Status
from shared.paths import InputRef, not_regular, resolve_input
from shared.runs import Commit, Run
from shared.worker import Deadline, InputFile, RunContext, WorkerSpec

VISIBILITY_FIRST_WAIT = 0.05
VISIBILITY_MAX_WAIT = 2.0
DEADLINE_MARGIN_SECONDS = 5.0  # stop waiting/working this long before Lambda would kill us
CLAIM_GRACE_SECONDS = 30.0  # a claim outlives its invocation's deadline by this much


def wait_until_visible(path: Path, deadline: Deadline, wait_seconds: float | None,
                       shown: str | None = None) -> os.stat_result:
    """Stat the input, waiting with backoff while it is not visible yet.

    Bounded by ``wait_seconds`` (CLI ``--wait``) or by the invocation's remaining time less
    a margin, whichever is shorter; then the input is retryable, never a permanent error.
    The message says first that the path does not exist (``shown``: as the caller named
    it), so a typo does not read as "try again later".
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
            raise InputNotVisible(f"{shown or path} does not exist on the mount (waited {waited:.1f}s); "
                                  "a file uploaded just now may not be visible yet: try again later")
        time.sleep(min(pause, budget))
        pause = min(pause * 2, VISIBILITY_MAX_WAIT)


def _committed_outcome(spec: WorkerSpec, ref: InputRef, commit: Commit) -> Outcome:
    if commit.failed:
        return Outcome(Status.ALREADY_FAILED, str(ref), spec.name, commit.run_id, commit.record,
                       code=commit.error.get("code"), message=commit.error.get("message"))
    return Outcome(Status.ALREADY_DONE, str(ref), spec.name, commit.run_id, commit.record)


def _lease_seconds(cfg: MountConfig, deadline: Deadline) -> float:
    """A claim lasts the invocation's remaining time plus a grace (or the configured lease)."""
    remaining = deadline.remaining()
    return cfg.claim_lease_seconds if remaining is None else remaining + CLAIM_GRACE_SECONDS


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
    source_object: Mapping[str, Any] | None = None,
) -> Outcome:
    """Process one input with one worker, exactly once across any number of callers.

    Permanent input errors are committed as ``error.json`` and returned as ``failed``;
    retryable conditions and refusals are raised; so is a bug.
    """
    deadline = deadline or Deadline(None)
    parsed_options = spec.parse_options(raw_options)
    run = Run(cfg, spec.name, spec.version, ref, parsed_options.to_manifest(), invocation=invocation,
              source_object=source_object)
    path = resolve_input(cfg, ref)
    st = wait_until_visible(path, deadline, wait_seconds, shown=str(ref))
    kind = not_regular(st.st_mode)
    if kind is not None:  # a FIFO would block the first read for ever; a device never ends
        raise RefusedPath(f"{ref} is {kind}, not a regular file; only regular files are processed")
    commit = run.look_up(st, retry_failed=retry_failed)
    if commit is not None:
        return _committed_outcome(spec, ref, commit)

    run.identify(path, st)
    commit = run.claim(lease_seconds=_lease_seconds(cfg, deadline), check_local=not in_lambda(),
                       retry_failed=retry_failed)
    if commit is not None:
        run.remember_committed(commit)
        return _committed_outcome(spec, ref, commit)
    obs.log_context(run_id=run.run_id)
    source = InputFile(ref=ref, path=path, size=run.size or 0, sha256=run.sha256 or "")
    ctx = RunContext(deadline=deadline, run_id=run.run_id, request_id=invocation, run=run)
    try:
        try:
            facts = spec.core().process(source, run.outputs, parsed_options, ctx)
        except PermanentInputError as exc:
            fault = environment_fault(exc, doing="processing the input")
            if fault is not None:  # a full disk wrapped as "cannot decode" by a library: not the input's fault
                raise fault from exc
            commit = run.commit_error(error_body(exc))
            return Outcome(Status.FAILED, str(ref), spec.name, run.run_id, commit.record, code=exc.code,
                           message=exc.message, duration_ms=commit.record["duration_ms"])
        commit = run.commit_manifest(facts)
    except BaseException:
        # nothing committed (retryable, an environment fault, a usage error found by the core,
        # a bug): the next attempt must not wait out this invocation's lease
        with contextlib.suppress(OSError):  # the disk that failed the run may fail this too
            run.release()
        raise
    record = commit.record
    return Outcome(Status.DONE, str(ref), spec.name, run.run_id, record, duration_ms=record["duration_ms"],
                   extra={"bytes_in": run.size, "bytes_out": sum(o["size"] for o in record["outputs"])})


def announce(cfg: MountConfig, outcome: Outcome) -> None:
    """Put the commit event of a commit made now; off (and boto3 never imported) without a bus."""
    if cfg.event_bus and outcome.faces.commit_event and outcome.record is not None:
        from shared.commit_events import publish

        publish(cfg, outcome)


def commit_crash(spec: WorkerSpec, ref: InputRef, raw_options: Mapping[str, Any] | None, cfg: MountConfig,
                 message: str, *, source_object: Mapping[str, Any] | None = None) -> Outcome:
    """Commit an ``error.json`` for an input whose worker process died in native code.

    Called by the parent of an isolated child (:mod:`shared.isolation`). The dead child's
    claim is taken over at once (same host, process gone), so the record lands in its run.
    """
    run = Run(cfg, spec.name, spec.version, ref, spec.parse_options(raw_options).to_manifest(),
              source_object=source_object)
    path = resolve_input(cfg, ref)
    run.identify(path, path.stat())
    commit = run.claim(lease_seconds=cfg.claim_lease_seconds, check_local=True)
    if commit is not None:
        return _committed_outcome(spec, ref, commit)
    commit = run.commit_error({"code": DECODER_CRASH, "message": message})
    outcome = Outcome(Status.FAILED, str(ref), spec.name, run.run_id, commit.record, code=DECODER_CRASH,
                      message=message)
    announce(cfg, outcome)
    return outcome


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
    """:func:`execute` for one work item, with every ending turned into an outcome that is
    logged and counted once. Only a bug becomes ``internal-error``, its traceback logged."""
    obs.log_context(worker=spec.name, input=item.key)
    try:
        outcome = _run_item(spec, item, cfg, deadline=deadline, invocation=invocation,
                            wait_seconds=wait_seconds, retry_failed=retry_failed)
    finally:
        obs.clear_context("input", "run_id")
    getattr(obs.logger, STATUS_TABLE[outcome.status].log_level)(
        f"input {outcome.status}",
        extra={"input": outcome.input, "run_id": outcome.run_id, "code": outcome.code,
               "error_message": outcome.message, "duration_ms": outcome.duration_ms},
    )
    obs.record_outcome(outcome)
    announce(cfg, outcome)
    return outcome


def _run_item(spec: WorkerSpec, item: WorkItem, cfg: MountConfig, **how: Any) -> Outcome:
    if item.refused is not None:
        obs.logger.warning("refused input", extra={"reason": item.refused, "source": item.source})
        return Outcome(Status.REFUSED, item.key, spec.name, code=RefusedPath.code, message=item.refused)
    if item.skipped is not None or item.input is None:
        obs.logger.info("skipped input", extra={"reason": item.skipped, "source": item.source})
        return Outcome(Status.SKIPPED, item.key, spec.name, message=item.skipped)
    try:
        return execute(spec, item.input, item.options, cfg, source_object=item.source_object, **how)
    except RetryableError as exc:
        return Outcome(Status.RETRYABLE, item.key, spec.name, code=exc.code, message=exc.message)
    except PermanentInputError as exc:  # raised before a run directory existed (e.g. a directory)
        return Outcome(Status.FAILED, item.key, spec.name, code=exc.code, message=exc.message)
    except (RefusedPath, UsageError) as exc:
        return Outcome(Status.REFUSED, item.key, spec.name, code=exc.code, message=exc.message)
    except Exception as exc:  # a bug: logged with its traceback, reported, not committed
        fault = environment_fault(exc)
        if fault is not None:  # the disk or the mount failed: retryable, no traceback
            return Outcome(Status.RETRYABLE, item.key, spec.name, code=fault.code, message=fault.message)
        obs.logger.exception("internal error")
        return Outcome(Status.INTERNAL_ERROR, item.key, spec.name, code=INTERNAL,
                       message=f"{type(exc).__name__}: {exc}", extra={"traceback": traceback.format_exc(limit=8)})


# ------------------------------------------------------------------------------ Lambda


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
    bugs = [r for r in results if r.faces.lambda_action is LambdaAction.RAISE]
    if bugs:
        raise RuntimeError(f"{len(bugs)} input(s) hit an internal error: {bugs[0].message}")
    retry = [r for r in results if r.faces.lambda_action is LambdaAction.RETRY]
    if retry:
        raise RetryLater(f"{retry[0].input}: {retry[0].message}", code=retry[0].code)
    return {"results": [r.summary() for r in results]}


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
        pending = [o for o in outcomes if o.faces.lambda_action is not LambdaAction.REPORT]
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

    @obs.lambda_metrics().log_metrics(capture_cold_start_metric=True)
    @obs.lambda_logger().inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        obs.log_context(worker=spec.name)
        if "cfg" not in state:
            state["cfg"] = MountConfig.load()
        return handle_event(spec, event, context, state["cfg"])

    typed: Callable[[dict[str, Any], Any], dict[str, Any]] = handler
    return typed


