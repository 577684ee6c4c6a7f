"""Commit events: put on EventBridge (moto's server on 127.0.0.1), read back through a rule
to an SQS queue, as a consumer's queue would receive them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from recordcheck import validator
from s3support import ACCESS_KEY, REGION, SECRET_KEY, MotoS3, free_port
from test_runtime import LAUNCH

from shared import commit_events
from shared.config import MountConfig
from shared.runtime import handle_event
from workers.cli import LocalContext
from workers.registry import get_worker

TESTS = Path(__file__).resolve().parent


pytestmark = pytest.mark.usefixtures("echo_registered")


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """boto3 in the runtime finds moto through the standard variables; no client outlives the test."""
    for name, value in {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                        "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    commit_events._clients.clear()
    yield
    commit_events._clients.clear()


class Bus:
    """A bus with a rule for mountworks' events that targets an SQS queue."""

    def __init__(self, server: MotoS3) -> None:
        self.name = f"mw-{uuid.uuid4().hex[:8]}"
        self.sqs = server.client("sqs")
        events = server.client("events")
        self.queue = self.sqs.create_queue(QueueName=self.name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.create_event_bus(Name=self.name)
        events.put_rule(Name="to-queue", EventBusName=self.name, EventPattern=json.dumps({"source": ["mountworks"]}))
        events.put_targets(Rule="to-queue", EventBusName=self.name, Targets=[{"Id": "q", "Arn": arn}])

    def received(self, wait: float = 1) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10,
                                            WaitTimeSeconds=int(wait))
        return [json.loads(m["Body"]) for m in response.get("Messages", [])]


@pytest.fixture
def bus(moto_s3: MotoS3, aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Bus:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3.endpoint)
    return Bus(moto_s3)


def invoke(mount: Path, event: dict[str, Any], bus_name: str) -> dict[str, Any]:
    cfg = MountConfig.load(mount, event_bus=bus_name)
    return handle_event(get_worker("test-echo"), event, LocalContext("test-echo", 60), cfg)


def notification(key: str, **obj: str) -> dict[str, Any]:
    return {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                         "s3": {"bucket": {"name": "b"}, "object": {"key": key, **obj}}}]}


def test_a_commit_puts_run_committed_with_the_keys_of_its_record_and_outputs(mount: Path, bus: Bus) -> None:
    (mount / "ingest" / "a b.echo").write_bytes(b"ECHO event")
    [result] = invoke(mount, notification("ingest/a+b.echo", eTag="abc123", versionId="v1",
                                          sequencer="0A"), bus.name)["results"]
    assert result["status"] == "done"
    [event] = bus.received()
    assert (event["source"], event["detail-type"]) == ("mountworks", "Run Committed")
    manifest = json.loads((mount / "workspace" / "test-echo" / "a b.echo" / result["run_id"] /
                           "manifest.json").read_text())
    detail = event["detail"]
    assert detail == {
        "schema": "mountworks.event/1", "worker": "test-echo", "run_id": result["run_id"], "status": "done",
        "input": manifest["input"],
        "record_key": f"workspace/test-echo/a b.echo/{result['run_id']}/manifest.json",
        "output_keys": [o["path"] for o in manifest["outputs"]],
    }
    assert detail["input"]["version_id"] == "v1" and detail["input"]["etag"] == "abc123"
    assert list(validator("commit-event.schema.json").iter_errors(detail)) == []

    # a duplicate delivery commits nothing, so it announces nothing
    [again] = invoke(mount, notification("ingest/a+b.echo"), bus.name)["results"]
    assert again["status"] == "already-done"
    assert bus.received() == []


def test_a_permanent_error_puts_run_failed_with_its_code(mount: Path, bus: Bus, monkeypatch: pytest.MonkeyPatch,
                                                        ) -> None:
    monkeypatch.setenv("MOUNTWORKS_BUCKET_PREFIX", "")
    (mount / "ingest" / "bad.echo").write_bytes(b"ECHO-BAD")
    cfg = MountConfig.load(mount, event_bus=bus.name, bucket_prefix="tenant/a")
    [result] = handle_event(get_worker("test-echo"), {"input": "ingest/bad.echo"},
                            LocalContext("test-echo", 60), cfg)["results"]
    assert result["status"] == "failed"
    [event] = bus.received()
    assert event["detail-type"] == "Run Failed"
    assert event["detail"]["error"] == {"code": "corrupt-input", "message": "this echo input is marked bad"}
    assert event["detail"]["record_key"] == f"tenant/a/workspace/test-echo/bad.echo/{result['run_id']}/error.json"
    assert event["detail"]["output_keys"] == []
    assert list(validator("commit-event.schema.json").iter_errors(event["detail"])) == []
    assert list(validator("commit-event.schema.json").iter_errors({**event["detail"], "output_keys": ["x"]}))


def test_no_bus_means_no_event_and_no_boto3_in_the_process(mount: Path) -> None:
    (mount / "ingest" / "q.echo").write_bytes(b"ECHO quiet")
    code = LAUNCH.replace("from workers.cli import main; raise SystemExit(main(sys.argv[1:]))",
                          "from workers.cli import main; rc = main(sys.argv[1:]); "
                          "print(sorted(m for m in ('boto3', 'shared.commit_events') "
                          "if m in sys.modules), file=sys.stderr); raise SystemExit(rc)")
    event = mount.parent / "event.json"
    event.write_text(json.dumps({"input": "ingest/q.echo"}))
    run = subprocess.run([sys.executable, "-c", code, "invoke", "test-echo", str(event), "--root", str(mount)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["results"][0]["status"] == "done"
    assert run.stderr.strip().splitlines()[-1] == "[]"
    with_bus = subprocess.run([sys.executable, "-c", code, "invoke", "test-echo", str(event), "--root", str(mount)],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "MOUNTWORKS_EVENT_BUS": "b", "AWS_DEFAULT_REGION": REGION,
                                   "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert json.loads(with_bus.stdout)["results"][0]["status"] == "already-done"  # nothing committed now:
    assert with_bus.stderr.strip().splitlines()[-1] == "[]"  # no event, and still no boto3


def test_an_unreachable_bus_loses_the_event_not_the_commit(mount: Path, aws_env: None,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    (mount / "ingest" / "lost.echo").write_bytes(b"ECHO lost")
    started = time.monotonic()
    [result] = invoke(mount, {"input": "ingest/lost.echo"}, "nowhere")["results"]
    assert result["status"] == "done"
    assert time.monotonic() - started < 30  # bounded timeouts, not botocore's 60 s default
    assert (mount / "workspace" / "test-echo" / "lost.echo" / result["run_id"] / "manifest.json").is_file()
    logged = capsys.readouterr().err
    assert "commit event not put" in logged and result["run_id"] in logged


def test_the_bus_comes_from_the_environment_and_an_argument_wins(mount: Path) -> None:
    assert MountConfig.load(mount, environ={}).event_bus == ""
    assert MountConfig.load(mount, environ={"MOUNTWORKS_EVENT_BUS": " results "}).event_bus == "results"
    assert MountConfig.load(mount, event_bus="", environ={"MOUNTWORKS_EVENT_BUS": "results"}).event_bus == ""


@pytest.mark.deploy
def test_the_template_wires_the_bus_its_permission_and_the_network_path() -> None:
    import yaml
    from test_deploy import FANOUT, TEMPLATE, _CfnLoader, _functions

    from shared import config

    template = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)
    assert template["Parameters"]["CommitEventBusName"]["Default"] == ""  # off unless asked for
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env[config.ENV_EVENT_BUS] == {"Ref": "CommitEventBusName"}
    res = template["Resources"]
    policy = res["CommitEventsPolicy"]
    assert policy["Condition"] == "HasCommitEventBus"
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "events:PutEvents"
    assert statement["Resource"]["Fn::Sub"].endswith(":event-bus/${CommitEventBusName}")  # that bus, no other
    assert statement["Condition"] == {"StringEquals": {"events:source": commit_events.SOURCE}}
    # every function that commits may put events: the workers' SAM roles and the durable video role
    roles = {r["Ref"] for r in policy["Properties"]["Roles"]}
    assert roles == {f"{name}Role" for name, fn in res.items() if fn in _functions(template).values()} | {
        "VideoFanoutRole"}
    assert set(FANOUT) == {"VideoSegmentFunction", "VideoFanoutFunction"}  # the segment function never commits
    # the functions are in a VPC without internet: an interface endpoint, reachable from them only
    endpoint = res["EventsEndpoint"]["Properties"]
    assert endpoint["ServiceName"] == {"Fn::Sub": "com.amazonaws.${AWS::Region}.events"}
    assert endpoint["VpcEndpointType"] == "Interface" and endpoint["PrivateDnsEnabled"] is True
    (ingress,) = res["EventsEndpointSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert ingress["SourceSecurityGroupId"] == {"Fn::GetAtt": ["FunctionSecurityGroup", "GroupId"]}
    egress = res["FunctionToEventsEndpointEgress"]["Properties"]
    assert (egress["FromPort"], egress["DestinationSecurityGroupId"]) == (
        443, {"Fn::GetAtt": ["EventsEndpointSecurityGroup", "GroupId"]})
    assert {res[n]["Condition"] for n in ("EventsEndpoint", "EventsEndpointSecurityGroup",
                                           "FunctionToEventsEndpointEgress")} == {"CreateEventsVpcEndpoint"}
