"""Commit events: one EventBridge event per commit, so that consumers need not poll.

Off unless the mount configuration names a bus (``MOUNTWORKS_EVENT_BUS``, a name or an
ARN); then, after each commit made now (not a duplicate's "already done"), the runtime
puts ``source: mountworks`` with ``detail-type`` ``Run Committed`` or ``Run Failed`` (the
status table's last column) and a detail naming the worker, the input (with its object
identity), the run-id, the status, the commit record's key and the output keys.

Why the commit stands when the event cannot be put: the manifest is the truth and is
already written; failing the invocation would only make the retry find "already done"
and put nothing either. So a lost event (network, throttling past botocore's retries, a
failed entry) is logged at error level with its run-id and counted
(``CommitEventsFailed``); a consumer that must not miss a result also lists runs with the
reader (docs/consumers.md). Timeouts are short: a function whose VPC has no route to
EventBridge loses seconds, not its invocation.

Imported only when events are on, so that boto3 stays out of every other cold start.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from shared import observability as obs
from shared.config import MountConfig
from shared.outcomes import Outcome
from shared.runs import record_path
from shared.schemas import EVENT_SCHEMA

SOURCE = "mountworks"
CONNECT_TIMEOUT_SECONDS = 2.0
READ_TIMEOUT_SECONDS = 5.0
MAX_ATTEMPTS = 3

_clients: dict[str, Any] = {}


def _key(cfg: MountConfig, rel: str) -> str:
    return "/".join(p for p in (cfg.bucket_prefix, rel) if p)


def detail(cfg: MountConfig, outcome: Outcome) -> dict[str, Any]:
    """The event's detail: what a consumer needs to fetch the result (keys are S3 keys)."""
    record = outcome.record or {}
    failed = "error" in record
    body: dict[str, Any] = {
        "schema": EVENT_SCHEMA,
        "worker": outcome.worker,
        "run_id": outcome.run_id,
        "status": str(outcome.status),
        "input": record.get("input", {"path": outcome.input}),
        "record_key": _key(cfg, record_path(cfg, record, failed=failed)),
        "output_keys": [_key(cfg, str(o["path"])) for o in record.get("outputs") or []],
    }
    if failed:
        body["error"] = {k: v for k, v in record["error"].items() if k in ("code", "message", "limit")}
    return body


def entry(cfg: MountConfig, outcome: Outcome) -> dict[str, Any]:
    """One PutEvents entry (the detail stays well under EventBridge's 256 KB for any run)."""
    return {"Source": SOURCE, "DetailType": str(outcome.faces.commit_event), "EventBusName": cfg.event_bus,
            "Resources": [], "Detail": json.dumps(detail(cfg, outcome), ensure_ascii=False)}


def _client() -> Any:
    if "events" not in _clients:
        config = importlib.import_module("botocore.config").Config(
            connect_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS,
            retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"})
        _clients["events"] = importlib.import_module("boto3").client("events", config=config)
    return _clients["events"]


def publish(cfg: MountConfig, outcome: Outcome) -> bool:
    """Put the commit event; False (logged, counted) when it could not be put."""
    try:
        response = _client().put_events(Entries=[entry(cfg, outcome)])
        failed = response.get("FailedEntryCount", 0)
        problem = f"{response['Entries'][0].get('ErrorCode')}: {response['Entries'][0].get('ErrorMessage')}" \
            if failed else None
    except Exception as exc:  # botocore's errors, and no credentials or region: the commit stands
        problem = f"{type(exc).__name__}: {exc}"
    if problem is None:
        return True
    obs.logger.error("commit event not put", extra={"run_id": outcome.run_id, "event_bus": cfg.event_bus,
                                                    "reason": problem})
    obs.count("CommitEventsFailed")
    return False
