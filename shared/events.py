"""Every trigger shape -> work items. Handlers never look inside events themselves.

Accepted (see CONTRACT.md, "Triggers a Lambda handler accepts"):
- S3 event notifications: ``Records[].s3``; keys are form-encoded and decoded once here;
  only ``ObjectCreated:*`` records are work, others are skipped.
- EventBridge "Object Created" events from S3: ``detail.object.key``, form-encoded like a
  notification's key and decoded here once, as Powertools' own accessor does.
- SQS messages whose body is either of the above (the SQS layer is in runtime.py, for
  partial batch responses); S3's ``s3:TestEvent`` is skipped.
- SNS fan-out of S3 notifications: an SNS event (``Records[].Sns``, S3 -> SNS -> Lambda) or
  an SQS body that is SNS's envelope (S3 -> SNS -> SQS without raw delivery); the S3 event
  is the notification's ``Message``, unwrapped once here.
- Direct invocation: ``{"input": "ingest/a/b.jpg", "options": {...}}``.
- Step Functions Distributed Map items from an S3 ItemReader: one ``{"Key": ...}`` item,
  or a batch ``{"Items": [...], "BatchInput": {"options": {...}}}``.

A key that is unsafe becomes a *refused* item; one outside the ingest prefix a *skipped*
item. Both are reported and logged by the runtime, never processed, never retried.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from shared.config import MountConfig
from shared.errors import RefusedPath, UsageError
from shared.paths import InputRef, decode_s3_notification_key, input_from_bucket_key, input_from_path


class WorkItem(NamedTuple):
    """One input to process, or the reason it will not be."""

    source: str
    key: str
    input: InputRef | None = None
    options: Mapping[str, Any] = MappingProxyType({})  # read-only: one shared empty default
    skipped: str | None = None
    refused: str | None = None
    # the S3 object the trigger named: version_id, etag, sequencer (as far as the trigger says);
    # recorded in the manifest's ``input`` so a consumer can match a result to an object version
    source_object: Mapping[str, Any] | None = None  # a plain dict: items cross to isolated children by pickle


def _object_identity(size: Any = None, **fields: Any) -> dict[str, Any] | None:
    """The trigger's object identity, blank and non-string fields dropped, ETag quotes removed.

    ``size`` (the object's, as the trigger says) is kept to check that the file read is
    that object version: the runtime records the identity only when the sizes agree.
    """
    found: dict[str, Any] = {name: value.strip('"') for name, value in fields.items()
                             if isinstance(value, str) and value.strip('"')}
    if found and isinstance(size, int) and not isinstance(size, bool):
        found["size"] = size
    return found or None


def _item(source: str, key: str, cfg: MountConfig, options: Mapping[str, Any], *, bucket_key: bool,
          source_object: Mapping[str, Any] | None = None) -> WorkItem:
    try:
        ref = input_from_bucket_key(cfg, key) if bucket_key else input_from_path(cfg, key)
    except RefusedPath as exc:
        return WorkItem(source, key, refused=exc.message)
    if ref is None:
        return WorkItem(source, key, skipped=f"outside the ingest prefix {cfg.ingest_prefix}/")
    return WorkItem(source, key, input=ref, options=options, source_object=source_object)


def _options(value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UsageError(f"'options' must be an object, got {type(value).__name__}")
    return value


def is_sqs_event(event: Mapping[str, Any]) -> bool:
    """SQS's own shape: every record from ``aws:sqs`` with its ``messageId``, the name a partial
    batch response gives a failed message by (a record without one is a hand-made event)."""
    records = event.get("Records")
    return isinstance(records, list) and bool(records) and all(
        isinstance(r, Mapping) and r.get("eventSource") == "aws:sqs" and isinstance(r.get("messageId"), str)
        and r["messageId"] for r in records
    )


MALFORMED = (KeyError, TypeError, AttributeError, ValueError)


def _s3_notification(event: Mapping[str, Any], cfg: MountConfig) -> list[WorkItem]:
    from aws_lambda_powertools.utilities.data_classes.s3_event import S3Event

    items = []
    for record in S3Event(dict(event)).records:
        try:
            obj = record.s3.get_object.raw_event
            raw_key = obj.get("key", "")
            event_name = str(record.event_name)
            identity = _object_identity(obj.get("size"), version_id=obj.get("versionId"), etag=obj.get("eTag"),
                                        sequencer=obj.get("sequencer"))
        except MALFORMED:
            items.append(WorkItem("s3", repr(record.raw_event)[:200], refused="a malformed S3 notification record"))
            continue
        if not isinstance(raw_key, str):
            items.append(WorkItem("s3", repr(raw_key), refused="the record's object key is not a string"))
            continue
        key = decode_s3_notification_key(raw_key)
        if not event_name.startswith("ObjectCreated:"):
            items.append(WorkItem("s3", key, skipped=f"{event_name} is not an object creation"))
            continue
        items.append(_item("s3", key, cfg, {}, bucket_key=True, source_object=identity))
    return items


def _eventbridge(event: Mapping[str, Any], cfg: MountConfig) -> list[WorkItem]:
    from aws_lambda_powertools.utilities.data_classes.s3_event import S3EventBridgeNotificationEvent

    try:
        obj = S3EventBridgeNotificationEvent(dict(event)).detail.object.raw_event
        raw_key = obj["key"]
        key = decode_s3_notification_key(raw_key) if isinstance(raw_key, str) else raw_key
        identity = _object_identity(obj.get("size"), version_id=obj.get("version-id"), etag=obj.get("etag"),
                                    sequencer=obj.get("sequencer"))
    except MALFORMED:
        return [WorkItem("eventbridge", repr(event.get("detail"))[:200], refused="a malformed EventBridge S3 event")]
    if event.get("detail-type") != "Object Created":
        return [WorkItem("eventbridge", str(key), skipped=f"{event.get('detail-type')!r} is not Object Created")]
    if not isinstance(key, str):
        return [WorkItem("eventbridge", repr(key), refused="detail.object.key is not a string")]
    return [_item("eventbridge", key, cfg, {}, bucket_key=True, source_object=identity)]


def _map_items(items: list[Any], batch_input: Mapping[str, Any], cfg: MountConfig) -> list[WorkItem]:
    options = _options(batch_input.get("options"))
    result = []
    for entry in items:
        if not isinstance(entry, Mapping):
            result.append(WorkItem("map", repr(entry)[:200], refused="a Map item must be an object with a Key"))
            continue
        key = entry.get("Key", entry.get("key"))
        if not isinstance(key, str):
            result.append(WorkItem("map", repr(entry)[:200], refused="a Map item has no string 'Key'"))
            continue
        item_options = {**options, **_options(entry.get("options"))}
        identity = _object_identity(entry.get("Size"), version_id=entry.get("VersionId"),
                                    etag=entry.get("Etag", entry.get("ETag")))
        result.append(_item("map", key, cfg, item_options, bucket_key=True, source_object=identity))
    return result


def _is_sns_envelope(value: Any) -> bool:
    """SNS's notification as it arrives in an SQS body (or in an SNS event's ``Sns``)."""
    return isinstance(value, Mapping) and value.get("Type") == "Notification" and isinstance(value.get("Message"), str)


def _sns_message(notification: Mapping[str, Any], cfg: MountConfig) -> list[WorkItem]:
    """The S3 event an SNS notification carries as its ``Message`` (JSON text): its items, or
    one refused item saying why there are none. Unwrapped once: SNS does not nest."""
    message = notification.get("Message")
    if not isinstance(message, str):
        return [WorkItem("sns", repr(notification)[:200], refused="an SNS notification without a Message")]
    try:
        inner = json.loads(message)
    except ValueError:
        return [WorkItem("sns", message[:200], refused="the SNS message is not JSON")]
    try:
        return work_items(inner, cfg, sns=False)
    except UsageError as exc:
        return [WorkItem("sns", message[:200], refused=exc.message)]


def _is_sns_record(record: Any) -> bool:
    return (isinstance(record, Mapping) and record.get("EventSource") == "aws:sns"
            and isinstance(record.get("Sns"), Mapping))


def work_items(event: Any, cfg: MountConfig, *, sns: bool = True) -> list[WorkItem]:
    """Normalize any non-SQS trigger (and each SQS body) into work items (``sns``: an SNS
    event is taken too; False inside an SNS message)."""
    if not isinstance(event, Mapping):
        raise UsageError(f"an event must be a JSON object, got {type(event).__name__}")
    records = event.get("Records")
    if isinstance(records, list):
        if all(isinstance(r, Mapping) and "s3" in r for r in records):
            return _s3_notification(event, cfg)
        if sns and records and all(_is_sns_record(r) for r in records):
            return [item for r in records for item in _sns_message(r["Sns"], cfg)]
        raise UsageError("event has Records that are not S3 notifications")
    if event.get("source") == "aws.s3" and "detail" in event:
        return _eventbridge(event, cfg)
    if event.get("Event") == "s3:TestEvent":
        return [WorkItem("s3", "", skipped="s3:TestEvent")]
    if "input" in event:
        path = event["input"]
        if not isinstance(path, str):
            raise UsageError("'input' must be a path relative to the mount root, such as ingest/a.jpg")
        return [_item("direct", path, cfg, _options(event.get("options")), bucket_key=False)]
    if isinstance(event.get("Items"), list):
        batch_input = event.get("BatchInput") or {}
        if not isinstance(batch_input, Mapping):
            raise UsageError("'BatchInput' must be an object")
        return _map_items(event["Items"], batch_input, cfg)
    if "Key" in event:
        return _map_items([event], {}, cfg)
    raise UsageError(
        "unrecognized event: expected an S3 notification, an EventBridge Object Created event, "
        "an SQS or SNS event carrying one, a Step Functions Map item, or {\"input\": \"ingest/...\"}"
    )


def sqs_body_items(body: str, cfg: MountConfig) -> list[WorkItem]:
    """Work items inside one SQS message body; a body that is not an S3 event is refused."""
    try:
        inner = json.loads(body)
    except ValueError:
        return [WorkItem("sqs", body[:200], refused="the SQS message body is not JSON")]
    if _is_sns_envelope(inner):  # S3 -> SNS -> SQS, without raw message delivery
        return _sns_message(inner, cfg)
    try:
        return work_items(inner, cfg)
    except UsageError as exc:
        return [WorkItem("sqs", body[:200], refused=exc.message)]
