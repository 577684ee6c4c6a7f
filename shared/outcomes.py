"""How one input ended, and the one table that gives each ending all its faces.

A status is reported six ways: the command's exit code, the CloudWatch metric, the
backfill's tally, what the Lambda handler does with it, whether a record was
committed, and the commit event put for it (when commit events are on).
They all read :data:`STATUS_TABLE`; nothing else maps a status.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

from shared.errors import EXIT_DONE, EXIT_INTERNAL, EXIT_PERMANENT, EXIT_RETRYABLE, EXIT_USAGE


class Status(StrEnum):
    DONE = "done"  # processed and committed now
    ALREADY_DONE = "already-done"  # committed before (a duplicate, a re-run)
    SKIPPED = "skipped"  # not for this worker (outside ingest/, a test event)
    FAILED = "failed"  # a permanent input error, committed now as error.json
    ALREADY_FAILED = "already-failed"  # failed for good before
    RETRYABLE = "retryable"  # nothing committed; the same request may succeed later
    REFUSED = "refused"  # an unsafe key or a bad request: never processed, never retried
    INTERNAL_ERROR = "internal-error"  # a bug: logged with its traceback, nothing committed


class LambdaAction(StrEnum):
    """What a Lambda handler does with an item that ended so."""

    REPORT = "report"  # listed in the response; the event is done
    RETRY = "retry"  # the invocation fails retryable (SQS: a batchItemFailure)
    RAISE = "raise"  # the invocation fails with an error (SQS: a batchItemFailure)


class Faces(NamedTuple):
    exit_code: int  # mountworks run / invoke
    metric: str  # EMF metric counted once per input
    tally: str  # backfill summary key
    backfill_exit: int  # what this status makes a whole backfill exit with
    lambda_action: LambdaAction
    committed: bool  # a record (manifest or error.json) stands for this input
    log_level: str
    commit_event: str | None  # the EventBridge detail-type put when this status commits now


_REPORT, _RETRY, _RAISE = LambdaAction.REPORT, LambdaAction.RETRY, LambdaAction.RAISE
_ROWS: dict[str, tuple[int, str, str, int, LambdaAction, bool, str]] = {
    # status          exit code        metric            tally             backfill exit   Lambda   commit log
    "done":           (EXIT_DONE,      "Processed",      "done",           EXIT_DONE,      _REPORT, True,  "info"),
    "already-done":   (EXIT_DONE,      "Skipped",        "skipped",        EXIT_DONE,      _REPORT, True,  "info"),
    "skipped":        (EXIT_DONE,      "Skipped",        "skipped",        EXIT_DONE,      _REPORT, False, "info"),
    "failed":         (EXIT_PERMANENT, "Failed",         "failed",         EXIT_DONE,      _REPORT, True,  "warning"),
    "already-failed": (EXIT_PERMANENT, "Skipped",        "skipped",        EXIT_DONE,      _REPORT, True,  "warning"),
    "retryable":      (EXIT_RETRYABLE, "Retryable",      "retryable",      EXIT_RETRYABLE, _RETRY,  False, "warning"),
    "refused":        (EXIT_USAGE,     "Refused",        "refused",        EXIT_DONE,      _REPORT, False, "warning"),
    "internal-error": (EXIT_INTERNAL,  "InternalErrors", "internal_error", EXIT_INTERNAL,  _RAISE,  False, "warning"),
}  # fmt: skip
# the last column: only a commit made now is announced (a duplicate's "already" is not news)
_COMMIT_EVENTS = {"done": "Run Committed", "failed": "Run Failed"}
STATUS_TABLE: Mapping[Status, Faces] = MappingProxyType(
    {Status(k): Faces(*v, _COMMIT_EVENTS.get(k)) for k, v in _ROWS.items()})

STATUS_VALUES = frozenset(str(s) for s in Status)
TALLIES: tuple[str, ...] = tuple(dict.fromkeys(faces.tally for faces in STATUS_TABLE.values()))
BACKFILL_EXIT_PRECEDENCE = (EXIT_INTERNAL, EXIT_RETRYABLE, EXIT_DONE)  # the first one present wins


class Outcome(NamedTuple):
    """How one input ended with one worker; every face of it comes from :data:`STATUS_TABLE`."""

    status: Status
    input: str
    worker: str
    run_id: str | None = None
    record: dict[str, Any] | None = None  # the committed manifest or error record
    code: str | None = None
    message: str | None = None
    duration_ms: float = 0.0
    extra: Mapping[str, Any] = MappingProxyType({})  # read-only: one shared empty default

    @property
    def faces(self) -> Faces:
        return STATUS_TABLE[self.status]

    @property
    def exit_code(self) -> int:
        return self.faces.exit_code

    @property
    def committed(self) -> bool:
        return self.faces.committed

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"input": self.input, "worker": self.worker, "status": str(self.status)}
        if self.run_id:
            out["run_id"] = self.run_id
        if self.code:
            out["error"] = {"code": self.code, "message": self.message}
        elif self.message:
            out["reason"] = self.message
        return out
