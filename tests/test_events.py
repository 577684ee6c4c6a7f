"""Every trigger shape -> work items, on real event payloads (corpus) and the samples."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLE_EVENTS, load_event

from shared.config import MountConfig
from shared.errors import UsageError
from shared.events import is_sqs_event, sqs_body_items, work_items


@pytest.fixture
def cfg(mount: Path) -> MountConfig:
    return MountConfig.load(mount)


def under_ingest(event: dict[str, Any]) -> dict[str, Any]:
    """The same real payload, with each raw (still encoded) key moved under ingest/."""
    moved = copy.deepcopy(event)
    for record in moved.get("Records", []):
        record["s3"]["object"]["key"] = "ingest/" + record["s3"]["object"]["key"]
    if "detail" in moved:
        moved["detail"]["object"]["key"] = "ingest/" + moved["detail"]["object"]["key"]
    return moved


def inputs(items: list[Any]) -> list[str | None]:
    return [str(i.input) if i.input else None for i in items]


@pytest.mark.corpus
def test_two_records_are_both_work_and_plus_decodes_to_space(cfg: MountConfig) -> None:
    items = work_items(under_ingest(load_event("s3-event-two-records.json")), cfg)
    assert inputs(items) == ["ingest/HappyFace.jpg", "ingest/New File.jpg"]


@pytest.mark.corpus
def test_percent_encoded_key_is_decoded_once(cfg: MountConfig) -> None:
    items = work_items(under_ingest(load_event("s3-event-url-encoded-key.json")), cfg)
    assert inputs(items) == ["ingest/Happy Face.jpg"]


@pytest.mark.corpus
def test_keys_outside_ingest_are_skipped_with_a_reason(cfg: MountConfig) -> None:
    items = work_items(load_event("s3Event.json"), cfg)
    assert len(items) == 1 and items[0].input is None
    assert items[0].skipped == "outside the ingest prefix ingest/"


@pytest.mark.corpus
def test_delete_records_are_not_work(cfg: MountConfig) -> None:
    items = work_items(under_ingest(load_event("s3EventDeleteObject.json")), cfg)
    assert items[0].input is None and "ObjectRemoved:Delete" in (items[0].skipped or "")


@pytest.mark.corpus
def test_eventbridge_object_created_key_is_taken_as_sent(cfg: MountConfig) -> None:
    items = work_items(under_ingest(load_event("s3EventBridgeNotificationObjectCreatedEvent.json")), cfg)
    assert inputs(items) == ["ingest/IMG_m7fzo3.jpg"]


@pytest.mark.corpus
def test_sqs_wrapping_an_s3_notification(cfg: MountConfig) -> None:
    event = load_event("s3SqsEvent.json")
    assert is_sqs_event(event)
    body = under_ingest(json.loads(event["Records"][0]["body"]))
    assert inputs(sqs_body_items(json.dumps(body), cfg)) == ["ingest/test.pdf"]


@pytest.mark.corpus
def test_sqs_bodies_that_are_not_s3_events_are_refused_not_retried(cfg: MountConfig) -> None:
    event = load_event("sqsEvent.json")
    assert is_sqs_event(event) and event["Records"]
    for record in event["Records"]:
        items = sqs_body_items(record["body"], cfg)
        assert len(items) == 1 and items[0].refused


EXPECTED_SAMPLES = {
    "s3-put.json": ["ingest/photos/sample photo.jpg"],
    "eventbridge-object-created.json": ["ingest/docs/sample.pdf"],
    "direct.json": ["ingest/photos/sample photo.jpg"],
    "map-item.json": ["ingest/tables/sample.csv"],
    "map-batch.json": ["ingest/photos/sample photo.jpg", "ingest/photos/sample alpha.png"],
    "sns-s3.json": ["ingest/photos/sample photo.jpg"],  # S3 -> SNS -> Lambda
}


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED_SAMPLES.items()), ids=sorted(EXPECTED_SAMPLES))
def test_sample_events_for_every_trigger(cfg: MountConfig, name: str, expected: list[str]) -> None:
    assert inputs(work_items(json.loads((SAMPLE_EVENTS / name).read_text()), cfg)) == expected


@pytest.mark.parametrize(("name", "expected"), [("sqs-s3.json", ["ingest/photos/sample photo.jpg"]),
                                              ("sqs-eventbridge.json", ["ingest/docs/sample.pdf"]),
                                              ("sqs-sns-s3.json", ["ingest/photos/sample photo.jpg"])],
                         ids=["sqs-s3", "sqs-eventbridge", "sqs-sns-s3"])
def test_sample_sqs_events_unwrap_to_their_inner_event(cfg: MountConfig, name: str, expected: list[str]) -> None:
    event = json.loads((SAMPLE_EVENTS / name).read_text())
    assert is_sqs_event(event)
    found = [str(i.input) for r in event["Records"] for i in sqs_body_items(r["body"], cfg)]
    assert found == expected


def test_direct_invocation_options_are_carried(cfg: MountConfig) -> None:
    items = work_items({"input": "ingest/a.jpg", "options": {"sizes": "320"}}, cfg)
    assert items[0].options == {"sizes": "320"}


def test_map_batch_input_options_apply_to_every_item(cfg: MountConfig) -> None:
    items = work_items({"Items": [{"Key": "ingest/a"}, {"Key": "ingest/b", "options": {"q": 2}}],
                        "BatchInput": {"options": {"q": 1}}}, cfg)
    assert [dict(i.options) for i in items] == [{"q": 1}, {"q": 2}]


@pytest.mark.parametrize(
    ("event", "expect"),
    [
        ({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                       "s3": {"object": {"key": "ingest/..%2F..%2Fetc%2Fpasswd"}}}]}, "refused"),
        ({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                       "s3": {"object": {"key": "ingest/a%00b.jpg"}}}]}, "refused"),
        ({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                       "s3": {"object": {"key": "ingest/" + "k" * 1100}}}]}, "refused"),
        ({"input": "/etc/passwd"}, "refused"),
        ({"Key": "ingest/../../x"}, "refused"),
        ({"Items": ["not-an-object"]}, "refused"),
        ({"input": "workspace/image-resize/x.jpg"}, "skipped"),
        ({"Event": "s3:TestEvent", "Service": "Amazon S3"}, "skipped"),
    ],
    ids=["encoded-dotdot", "nul", "over-1024", "absolute", "map-escape", "map-junk", "workspace-key", "test-event"],
)
def test_unsafe_or_foreign_keys_are_reported_never_processed(cfg: MountConfig, event: dict[str, Any],
                                                            expect: str) -> None:
    items = work_items(event, cfg)
    assert len(items) == 1 and items[0].input is None
    assert (items[0].refused if expect == "refused" else items[0].skipped)


@pytest.mark.parametrize(
    "event",
    [[], "text", {"hello": "world"}, {"input": 42}, {"input": "ingest/a", "options": [1]},
     {"Records": [{"eventSource": "aws:sns"}]}],
    ids=["list", "string", "unknown-object", "input-not-string", "options-not-object", "sns"],
)
def test_unrecognized_events_are_usage_errors(cfg: MountConfig, event: Any) -> None:
    with pytest.raises(UsageError):
        work_items(event, cfg)


def test_eventbridge_keys_are_decoded_once_like_notifications(cfg: MountConfig) -> None:
    event = {"source": "aws.s3", "detail-type": "Object Created",
             "detail": {"bucket": {"name": "b"}, "object": {"key": "ingest/a+b%2Bc%25.jpg", "size": 1}}}
    assert inputs(work_items(event, cfg)) == ["ingest/a b+c%.jpg"]


def _sns_event(message: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((SAMPLE_EVENTS / "sns-s3.json").read_text())
    event["Records"][0]["Sns"]["Message"] = message
    return event


@pytest.mark.parametrize(("message", "expect"), [
    ("not json at all", "refused"),
    (json.dumps({"hello": "world"}), "refused"),
    (json.dumps({"Event": "s3:TestEvent", "Service": "Amazon S3"}), "skipped"),
    (json.dumps(_sns_event("{}")), "refused"),  # SNS inside SNS: unwrapped once, never nested
], ids=["not-json", "not-s3", "test-event", "nested-sns"])
def test_an_sns_message_that_is_not_an_s3_event_is_reported_never_processed(cfg: MountConfig, message: str,
                                                                           expect: str) -> None:
    for items in (work_items(_sns_event(message), cfg),
                  sqs_body_items(json.dumps(_sns_event(message)["Records"][0]["Sns"]), cfg)):
        assert len(items) == 1 and items[0].input is None
        assert (items[0].refused if expect == "refused" else items[0].skipped)


def test_sns_keys_are_decoded_once_like_notifications(cfg: MountConfig) -> None:
    s3 = json.loads((SAMPLE_EVENTS / "s3-put.json").read_text())
    s3["Records"][0]["s3"]["object"]["key"] = "ingest/a+b%2Bc%25.jpg"
    assert inputs(work_items(_sns_event(json.dumps(s3)), cfg)) == ["ingest/a b+c%.jpg"]
