"""What a first real deployment needs beyond lint: storage that does not grow for ever,
the network path and permissions of every AWS API the functions call, KMS, capacity,
operations. Plain Python over template.yaml and the code; no account needed.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_deploy import TEMPLATE, _CfnLoader

from workers.registry import WORKERS

pytestmark = pytest.mark.deploy


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)
    return loaded


def _sub(value: Any) -> str:
    assert isinstance(value, dict) and "Fn::Sub" in value, value
    text = value["Fn::Sub"]
    return text if isinstance(text, str) else str(text[0])


# ------------------------------------------------------------------ storage lifetime


def test_the_file_system_synchronization_is_set_explicitly(template: dict[str, Any]) -> None:
    """Import small inputs when opened, nothing under the workspace; expire unused data."""
    sync = template["Resources"]["FileSystem"]["Properties"]["SynchronizationConfiguration"]
    rules = {_sub(rule["Prefix"]): rule for rule in sync["ImportDataRules"]}
    assert set(rules) == {"${MountRootFolder}/${IngestPrefix}/", "${MountRootFolder}/${WorkspacePrefix}/"}
    ingest = rules["${MountRootFolder}/${IngestPrefix}/"]
    assert (ingest["Trigger"], ingest["SizeLessThan"]) == ("ON_FILE_ACCESS", 131072)
    assert rules["${MountRootFolder}/${WorkspacePrefix}/"]["SizeLessThan"] == 0
    assert sync["ExpirationDataRules"] == [{"DaysAfterLastAccess": {"Ref": "FileSystemExpirationDays"}}]


def test_old_runs_expire_only_when_asked(template: dict[str, Any]) -> None:
    """Off by default; when on, one lifecycle rule over the workspace prefix (runs and _seen)."""
    assert template["Parameters"]["RunExpirationDays"]["Default"] == 0
    assert template["Conditions"]["ExpireRuns"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "RunExpirationDays"}, 0]}]}
    rules = template["Resources"]["Bucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    optional = [r["Fn::If"] for r in rules if "Fn::If" in r]
    assert len(optional) == 1 and optional[0][0] == "ExpireRuns" and optional[0][2] == {"Ref": "AWS::NoValue"}
    rule = optional[0][1]
    assert _sub(rule["Prefix"]) == "${BucketPrefix}${MountRootFolder}/${WorkspacePrefix}/"
    assert rule["ExpirationInDays"] == {"Ref": "RunExpirationDays"}


# ------------------------------------------------------------------ AWS APIs: IAM and network

ROOT = TEMPLATE.parent
# What a library a function's code imports calls on AWS at run time.
SDK_APIS = {"aws_durable_execution_sdk_python": {"lambda:CheckpointDurableExecution",
                                                 "lambda:GetDurableExecutionState"}}
DURABLE_INVOKE = "lambda:InvokeFunction"  # DurableContext.invoke: Lambda invokes the target as the function
# Code that works on the mount (shared.runs writes every run): the S3 Files client and
# Lambda's direct S3 reads of large inputs (DirectS3Read, memory >= 512 MB).
MOUNT_APIS = {"s3files:ClientMount", "s3files:ClientWrite", "s3:GetObject"}
# boto3 in a function's code, module -> the APIs it calls. A module not listed fails the
# test: list its calls here, give the functions the permission and, with S3PrefixListId,
# an interface endpoint in EndpointSecurityGroup.
BOTO3_APIS: dict[str, set[str]] = {"shared.commit_events": {"events:PutEvents"}}
# An API called only when a template parameter is set (the code reads its variable).
ENABLED_BY = {"events:PutEvents": "CommitEventBusName"}
# Commit events are put by whatever commits. A handler listed here shares a module with code
# that commits but never commits itself (its body is checked for the calls that would).
NEVER_COMMITS = {"workers.video_transcode.durable.segment_handler"}
COMMIT_CALLS = {"run_item", "execute", "commit_run", "commit_manifest", "commit_error", "publish"}
EGRESS = {
    "egress anywhere (NAT)": {"S3PrefixListId": "", "ExistingEndpointSecurityGroupId": ""},
    "S3 gateway endpoint only": {"S3PrefixListId": "pl-0123abcd", "ExistingEndpointSecurityGroupId": ""},
    "existing interface endpoints": {"S3PrefixListId": "pl-0123abcd",
                                     "ExistingEndpointSecurityGroupId": "sg-0123abcd"},
}
SCENARIOS = {**EGRESS, **{f"{name}, commit events": {**params, "CommitEventBusName": "mountworks-commits"}
                          for name, params in EGRESS.items()}}


def _module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_imports(tree: ast.Module) -> Iterator[str]:
    """Modules the module imports: when it loads, and lazily inside its functions (a call
    made on the first input, such as the commit events' PutEvents, is still a call)."""
    for inner in ast.walk(tree):
        if isinstance(inner, ast.Import):
            yield from (alias.name for alias in inner.names)
        elif isinstance(inner, ast.ImportFrom) and inner.module and not inner.level:
            yield inner.module
            yield from (f"{inner.module}.{alias.name}" for alias in inner.names)


def _is_durable(tree: ast.Module, handler: str) -> bool:
    """The handler is a durable function (decorated with the SDK's ``durable_execution``)."""
    return any(isinstance(node, ast.FunctionDef) and node.name == handler
               and any("durable_execution" in ast.unparse(d) for d in node.decorator_list) for node in tree.body)


def apis_called(handler_path: str) -> set[str]:
    """Every AWS API the function with handler ``module.attribute`` calls, from its code.

    The durable SDK counts for a durable handler (a plain handler beside it in the same
    module, such as the segment function, does not checkpoint) and for any other module.
    """
    handler_module, handler = handler_path.rsplit(".", 1)
    apis: set[str] = set()
    seen: set[str] = set()
    todo = [handler_module]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages load first
        tree = ast.parse(path.read_text())
        imported = set(_module_imports(tree))
        todo.extend(m for m in imported if m.split(".")[0] in ("shared", "workers"))
        tops = {m.split(".")[0] for m in imported}
        uses_boto3 = bool(tops & {"boto3", "botocore"}) or any(
            isinstance(n, ast.Constant) and n.value == "boto3" for n in ast.walk(tree))
        if uses_boto3:
            assert name in BOTO3_APIS, f"{name} calls AWS through boto3: list its APIs in BOTO3_APIS"
            apis |= BOTO3_APIS[name]
        for sdk, calls in SDK_APIS.items():
            if sdk in tops and (name != handler_module or _is_durable(tree, handler)):
                apis |= calls
                if any(isinstance(n, ast.Attribute) and n.attr == "invoke" for n in ast.walk(tree)):
                    apis.add(DURABLE_INVOKE)
        if name == "shared.runs":
            apis |= MOUNT_APIS
    if handler_path in NEVER_COMMITS:
        tree = ast.parse(_module_path(handler_module).read_text())
        [body] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == handler]
        called = {n.attr if isinstance(n, ast.Attribute) else n.id for n in ast.walk(body)
                  if isinstance(n, ast.Attribute | ast.Name)}
        assert not called & COMMIT_CALLS, f"{handler_path} commits now ({called & COMMIT_CALLS}): unlist it"
        apis.discard("events:PutEvents")
    return apis


def _module_path(name: str) -> Path:
    path = _module_file(name)
    assert path is not None, name
    return path


class Resolver:
    """The template as CloudFormation resolves it for one set of parameters."""

    def __init__(self, template: dict[str, Any], params: dict[str, str]) -> None:
        self.template = template
        self.params = {k: str(v.get("Default", "")) for k, v in template["Parameters"].items()} | params

    def condition(self, node: Any) -> bool:
        if isinstance(node, str):
            return self.condition(self.template["Conditions"][node])
        (fn, args), = node.items()
        if fn == "Condition":
            return self.condition(args)
        if fn == "Fn::Equals":
            return bool(self.value(args[0]) == self.value(args[1]))
        if fn == "Fn::Not":
            return not self.condition(args[0])
        if fn == "Fn::And":
            return all(self.condition(a) for a in args)
        if fn == "Fn::Or":
            return any(self.condition(a) for a in args)
        raise AssertionError(f"unknown condition function {fn}")

    def value(self, node: Any) -> Any:
        """Fn::If and Ref of parameters resolved; AWS::NoValue dropped; other intrinsics kept."""
        if isinstance(node, list):
            return [v for v in (self.value(n) for n in node) if v is not NO_VALUE]
        if isinstance(node, dict):
            if set(node) == {"Fn::If"}:
                name, yes, no = node["Fn::If"]
                return self.value(yes if self.condition(name) else no)
            if set(node) == {"Ref"}:
                ref = node["Ref"]
                return NO_VALUE if ref == "AWS::NoValue" else self.params.get(ref, node)
            resolved = {k: self.value(v) for k, v in node.items()}
            return {k: v for k, v in resolved.items() if v is not NO_VALUE}
        return node

    def resources(self) -> dict[str, dict[str, Any]]:
        return {name: {**res, "Properties": self.value(res.get("Properties", {}))}
                for name, res in self.template["Resources"].items()
                if "Condition" not in res or self.condition(res["Condition"])}


NO_VALUE = object()


def _group(ref: Any) -> str:
    """A security group reference -> the logical id of the group or the id passed in."""
    if isinstance(ref, dict) and "Fn::GetAtt" in ref:
        return str(ref["Fn::GetAtt"][0])
    if isinstance(ref, dict) and "Ref" in ref:
        return str(ref["Ref"])
    return str(ref)


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    actions: set[str] = set()
    for statement in statements:
        if statement.get("Effect") == "Allow":
            listed = statement["Action"]
            actions |= {listed} if isinstance(listed, str) else set(listed)
    return actions


def _function_actions(resources: dict[str, dict[str, Any]], name: str) -> set[str]:
    """What the function's role allows: its own role's inline policies, or SAM's role made
    from its ``Policies`` (named ``<Function>Role``), plus managed policies attached to it."""
    props = resources[name]["Properties"]
    role_name = _group(props["Role"]) if "Role" in props else f"{name}Role"
    statements = ([s for p in resources[role_name]["Properties"].get("Policies", [])
                   for s in p["PolicyDocument"]["Statement"]] if "Role" in props else
                  [s for p in props.get("Policies", []) if isinstance(p, dict) and "Statement" in p
                   for s in p["Statement"]])
    statements += [s for res in resources.values() if res["Type"] == "AWS::IAM::ManagedPolicy"
                   and role_name in {_group(r) for r in res["Properties"].get("Roles", [])}
                   for s in res["Properties"]["PolicyDocument"]["Statement"]]
    return _actions(statements)


def network_gaps(template: dict[str, Any], params: dict[str, str]) -> list[str]:
    """Each (function, API) that has no IAM permission or no network path, for ``params``."""
    resolver = Resolver(template, params)
    resources = resolver.resources()
    function_groups = {_group(g) for g in resolver.value(template["Globals"]["Function"]["VpcConfig"])[
        "SecurityGroupIds"]}
    egress = [(rule, group) for group in function_groups
              for rule in resources[group]["Properties"].get("SecurityGroupEgress", [])]
    egress += [(res["Properties"], _group(res["Properties"]["GroupId"])) for res in resources.values()
               if res["Type"] == "AWS::EC2::SecurityGroupEgress"]
    egress = [(rule, g) for rule, g in egress if g in function_groups]

    def https_to(target: Callable[[dict[str, Any]], bool]) -> bool:
        return any(int(r["FromPort"]) <= 443 <= int(r["ToPort"]) and target(r) for r, _ in egress)

    endpoints = {res["Properties"]["ServiceName"]["Fn::Sub"].rsplit(".", 1)[-1]:
                 {_group(g) for g in res["Properties"]["SecurityGroupIds"]}
                 for res in resources.values() if res["Type"] == "AWS::EC2::VPCEndpoint"
                 and res["Properties"].get("VpcEndpointType") == "Interface"
                 and res["Properties"].get("PrivateDnsEnabled") is True}
    existing = resolver.params["ExistingEndpointSecurityGroupId"]
    ingress = {_group(res["Properties"]["GroupId"]) for res in resources.values()
               if res["Type"] == "AWS::EC2::SecurityGroupIngress" and int(res["Properties"]["FromPort"]) == 443
               and _group(res["Properties"]["SourceSecurityGroupId"]) in function_groups}
    ingress |= {name for name, res in resources.items() if res["Type"] == "AWS::EC2::SecurityGroup"
                and any(int(rule.get("FromPort", -1)) == 443 and _group(rule.get("SourceSecurityGroupId"))
                        in function_groups for rule in res["Properties"].get("SecurityGroupIngress", []))}
    gaps = []
    for name, res in resources.items():
        if res["Type"] != "AWS::Serverless::Function":
            continue
        allowed = _function_actions(resources, name)
        for api in sorted(apis_called(res["Properties"]["ImageConfig"]["Command"][0])):
            if api in ENABLED_BY and not resolver.params[ENABLED_BY[api]]:
                continue  # off in this deployment: the code does not call it
            service = api.split(":")[0]
            if api not in allowed:
                gaps.append(f"{name}: no IAM permission for {api}")
            if service == "s3files":
                path = any(r.get("FromPort") == 2049 and "DestinationSecurityGroupId" in r for r, _ in egress)
            elif service == "s3":
                path = https_to(lambda r: r.get("CidrIp") == "0.0.0.0/0"
                                or r.get("DestinationPrefixListId") == resolver.params["S3PrefixListId"] != "")
            else:
                reachable = (endpoints.get(service, set()) | ({existing} if existing else set())) & ingress
                path = https_to(lambda r: r.get("CidrIp") == "0.0.0.0/0") or any(
                    int(r["FromPort"]) <= 443 <= int(r["ToPort"])
                    and _group(r.get("DestinationSecurityGroupId")) in reachable for r, _ in egress)
            if not path:
                gaps.append(f"{name}: no network path to {service} for {api}")
    return gaps


def test_the_fan_out_calls_the_lambda_api_and_every_worker_the_mount() -> None:
    """The inventory below is the code's: a worker mounts and reads S3 and puts its commit
    events (imported lazily, on the first commit); the fan-out checkpoints and commits too;
    a segment function only encodes."""
    commits = {"events:PutEvents"}
    assert apis_called("workers.image_resize.handler.handler") == MOUNT_APIS | commits
    assert apis_called("workers.handler.handler") == MOUNT_APIS | commits
    assert apis_called("workers.video_transcode.durable.segment_handler") == MOUNT_APIS
    assert apis_called("workers.video_transcode.durable.orchestrate") == MOUNT_APIS | SDK_APIS[
        "aws_durable_execution_sdk_python"] | {DURABLE_INVOKE} | commits


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_api_a_function_calls_has_iam_and_a_network_path(template: dict[str, Any], scenario: str) -> None:
    assert network_gaps(template, SCENARIOS[scenario]) == []


def test_without_the_commit_events_policy_every_committing_function_lacks_put_events(
        template: dict[str, Any]) -> None:
    """The commit-event calls are found although they are imported lazily: drop the policy
    and each function that commits is named."""
    broken = {**template, "Resources": {k: v for k, v in template["Resources"].items() if k != "CommitEventsPolicy"}}
    gaps = network_gaps(broken, SCENARIOS["egress anywhere (NAT), commit events"])
    assert gaps == [f"{f}Function: no IAM permission for events:PutEvents" for f in
                    ("ImageResize", "PdfExtract", "VideoTranscode", "VideoFanout", "ParquetNormalize")], gaps
    assert network_gaps(broken, SCENARIOS["egress anywhere (NAT)"]) == []  # no bus: no call, no need


def test_without_the_lambda_endpoint_the_fan_out_has_no_path(template: dict[str, Any]) -> None:
    """The check above can fail: S3-only egress and no Lambda endpoint strand the fan-out."""
    broken = {**template, "Resources": {k: v for k, v in template["Resources"].items() if k != "LambdaEndpoint"}}
    assert network_gaps(broken, SCENARIOS["S3 gateway endpoint only"]) == [
        "VideoFanoutFunction: no network path to lambda for lambda:CheckpointDurableExecution",
        "VideoFanoutFunction: no network path to lambda for lambda:GetDurableExecutionState",
        "VideoFanoutFunction: no network path to lambda for lambda:InvokeFunction"]
    assert network_gaps(broken, SCENARIOS["egress anywhere (NAT)"]) == []


# ------------------------------------------------------------------ capacity per worker


def _deploy(worker: str) -> Any:
    return importlib.import_module(WORKERS[worker] + ".deploy").DEPLOY


def _worker_functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {res["Metadata"]["DockerTag"]: res["Properties"] for name, res in template["Resources"].items()
            if res["Type"] == "AWS::Serverless::Function" and name.removesuffix("Function") in
            {"".join(p.capitalize() for p in w.split("-")) for w in WORKERS}}


@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_each_worker_has_its_own_memory_batch_and_concurrency(template: dict[str, Any], worker: str) -> None:
    deploy, props = _deploy(worker), _worker_functions(template)[worker]
    queue = props["Events"]["Queue"]["Properties"]
    assert props["MemorySize"] == deploy.memory_mb
    assert queue["BatchSize"] == deploy.batch_size
    assert queue["ScalingConfig"]["MaximumConcurrency"] == deploy.max_concurrency
    assert props["ReservedConcurrentExecutions"] == {
        "Fn::If": ["ReserveWorkerConcurrency", deploy.max_concurrency, {"Ref": "AWS::NoValue"}]}
    assert template["Parameters"]["ReserveConcurrency"]["Default"] == "no"  # an option, off by default


def test_a_video_is_one_message_and_one_backfill_item_per_invocation() -> None:
    video = _deploy("video-transcode")
    assert (video.batch_size, video.backfill_batch_size) == (1, 1)


def test_the_fan_out_keeps_to_the_segment_functions_capacity(template: dict[str, Any],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import config
    from workers.video_transcode import durable

    resources = template["Resources"]
    fanout_env = resources["VideoFanoutFunction"]["Properties"]["Environment"]["Variables"]
    assert fanout_env[config.ENV_VIDEO_MAX_FANOUT] == {"Ref": "VideoFanoutMaxSegments"}
    assert resources["VideoSegmentFunction"]["Properties"]["ReservedConcurrentExecutions"] == {
        "Fn::If": ["ReserveWorkerConcurrency", {"Ref": "VideoFanoutMaxSegments"}, {"Ref": "AWS::NoValue"}]}
    monkeypatch.setenv(config.ENV_VIDEO_MAX_FANOUT, "7")
    assert config.video_max_fanout(durable.MAX_FANOUT) == 7
    source = ast.unparse(ast.parse(Path(durable.__file__).read_text()))
    assert "MapConfig(max_concurrency=config.video_max_fanout(MAX_FANOUT))" in source


# ------------------------------------------------------------------ SSE-KMS

KEY = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def _statements(res: dict[str, Any]) -> list[dict[str, Any]]:
    props = res["Properties"]
    if res["Type"] == "AWS::IAM::Role":
        return [s for p in props.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
    return [s for p in props.get("Policies", []) if isinstance(p, dict) and "Statement" in p for s in p["Statement"]]


def _reads_s3(res: dict[str, Any]) -> bool:
    return any(a.startswith("s3:Get") for s in _statements(res) for a in
               ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))


@pytest.mark.parametrize("key", [KEY, ""], ids=["SSE-KMS", "SSE-S3"])
def test_a_kms_key_encrypts_everything_and_every_reader_may_use_it(template: dict[str, Any], key: str) -> None:
    resources = Resolver(template, {"KmsKeyArn": key}).resources()
    fs = resources["FileSystem"]["Properties"]
    bucket = resources["Bucket"]["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    queues = {n: r["Properties"] for n, r in resources.items() if r["Type"] == "AWS::SQS::Queue"}
    durable = resources["VideoFanoutFunction"]["Properties"]["DurableConfig"]
    readers = {n: r for n, r in resources.items() if r["Type"] in ("AWS::IAM::Role", "AWS::Serverless::Function")
               and _reads_s3(r)}
    assert len(queues) == 2 * len(WORKERS) and len(readers) >= len(WORKERS) + 3  # + sync role, segment, fan-out
    kms = {n: [s for s in _statements(r) if s.get("Sid") == "UseTheKmsKey"] for n, r in readers.items()}
    if not key:  # SSE-S3 and AWS-owned keys; no KMS permission anywhere
        assert "KmsKeyId" not in fs and "KMSKeyArn" not in durable
        assert bucket["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
        assert all(q["SqsManagedSseEnabled"] is True and "KmsMasterKeyId" not in q for q in queues.values())
        assert all(found == [] for found in kms.values())
        return
    assert fs["KmsKeyId"] == key and durable["KMSKeyArn"] == key
    assert bucket["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
    assert all(q["KmsMasterKeyId"] == key and "SqsManagedSseEnabled" not in q for q in queues.values())
    for name, found in kms.items():
        assert len(found) == 1, f"{name} reads S3 but may not use the key"
        statement = found[0]
        assert statement["Resource"] == key
        assert sorted(statement["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
        services = {s["Fn::Sub"].split(".")[0] for s in statement["Condition"]["StringEquals"]["kms:ViaService"]}
        assert {"s3", "s3files"} <= services <= {"s3", "s3files", "sqs", "lambda"}, name
        if resources[name]["Type"] == "AWS::Serverless::Function" and "Events" in resources[name]["Properties"]:
            assert "sqs" in services, f"{name} reads an encrypted queue"


# ------------------------------------------------------------------ operations


def _emitted_dimensions() -> tuple[str, list[str]]:
    """(namespace, dimension names) of an EMF record as the worker emits it, by Powertools itself."""
    from shared import observability

    metrics = observability.lambda_metrics()
    metrics.set_default_dimensions(worker="image-resize")
    metrics.add_metric(name="Processed", unit="Count", value=1)
    try:
        blob = metrics.serialize_metric_set()
    finally:
        metrics.clear_metrics()
        metrics.clear_default_dimensions()
    (directive,) = blob["_aws"]["CloudWatchMetrics"]
    (dimensions,) = directive["Dimensions"]
    return str(directive["Namespace"]), sorted(dimensions)


def _dashboard(template: dict[str, Any]) -> dict[str, Any]:
    body, _ = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    loaded: dict[str, Any] = json.loads(re.sub(r"\$\{[^}]+\}", "X", body))
    return loaded


def test_the_dashboard_shows_every_operational_signal(template: dict[str, Any]) -> None:
    from shared.outcomes import STATUS_TABLE

    namespace, dimensions = _emitted_dimensions()
    expressions = [m[0]["expression"] for w in _dashboard(template)["widgets"] for m in w["properties"]["metrics"]]
    worker_set = "{" + ",".join([namespace, *dimensions]) + "}"
    shown = {(re.search(r"MetricName=\"(\w+)\"", e).group(1), e.split("'")[3])  # type: ignore[union-attr]
             for e in expressions}
    metrics = {faces.metric for faces in STATUS_TABLE.values()}
    for metric, stat in [("Processed", "Sum"), ("Failed", "Sum"), ("Retryable", "Sum"), ("InternalErrors", "Sum"),
                         ("DurationMs", "p50"), ("DurationMs", "p99")]:
        assert metric in metrics | {"DurationMs"}
        assert any(worker_set in e and f'MetricName="{metric}"' in e and f"'{stat}'" in e for e in expressions), metric
    assert {("PendingExports", "Maximum"), ("ExportFailures", "Sum"), ("LostAndFoundFiles", "Maximum"),
            ("ApproximateAgeOfOldestMessage", "Maximum"), ("ExecutionsFailed", "Sum")} <= shown
    depth = [e for e in expressions if "ApproximateNumberOfMessagesVisible" in e]
    assert sorted('NOT \\"DeadLetter\\"' in e or 'NOT "DeadLetter"' in e for e in depth) == [False, True]


@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_each_worker_alarms_on_failures_and_internal_errors_as_emitted(template: dict[str, Any],
                                                                        worker: str) -> None:
    namespace, dimensions = _emitted_dimensions()
    logical = "".join(p.capitalize() for p in worker.split("-"))
    for metric, threshold in (("Failed", {"Ref": "FailedInputsThreshold"}), ("InternalErrors", 0)):
        alarm = template["Resources"][f"{logical}{metric}Alarm"]["Properties"]
        assert (alarm["Namespace"], alarm["MetricName"], alarm["Threshold"]) == (namespace, metric, threshold)
        assert sorted(d["Name"] for d in alarm["Dimensions"]) == dimensions
        assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]}["worker"] == worker
    assert template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"] == namespace


def test_a_failed_backfill_raises_an_alarm(template: dict[str, Any]) -> None:
    alarm = template["Resources"]["BackfillFailuresAlarm"]["Properties"]
    watched = {m["MetricStat"]["Metric"]["MetricName"] for m in alarm["Metrics"] if "MetricStat" in m}
    assert watched == {"ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"}
    assert all(m["MetricStat"]["Metric"]["Dimensions"] == [{"Name": "StateMachineArn",
                                                            "Value": {"Ref": "BackfillStateMachine"}}]
               for m in alarm["Metrics"] if "MetricStat" in m)


def test_every_resource_that_takes_tags_is_tagged(template: dict[str, Any]) -> None:
    """By cfn-lint's copy of the CloudFormation schemas: a type with Tags must carry app=mountworks."""
    schemas = Path(importlib.import_module("cfnlint").__file__ or "").parent / "data" / "schemas"
    providers = json.loads((schemas / "providers" / "us-east-1.json").read_text())
    assert template["Globals"]["Function"]["Tags"] == {"app": "mountworks"}
    untagged = []
    for name, res in template["Resources"].items():
        kind, props = res["Type"], res.get("Properties", {})
        if kind == "AWS::Serverless::Function":
            continue  # Globals
        if kind.startswith("AWS::Serverless::"):
            ok = props.get("Tags", {}).get("app") == "mountworks"
        else:
            schema = json.loads((schemas / "resources" / f"{providers[kind]}.json").read_text())
            ok = "Tags" not in schema["properties"] or {"Key": "app", "Value": "mountworks"} in props.get("Tags", [])
        if not ok:
            untagged.append(name)
    assert untagged == []


def test_functions_do_not_pay_for_tracing_nothing_records() -> None:
    """No code records X-Ray subsegments (no Powertools Tracer), so Active tracing is off."""
    text = TEMPLATE.read_text()
    assert "Tracing: Active" not in text and "AWSXRayDaemonWriteAccess" not in text
    sources = [p.read_text() for folder in ("shared", "workers") for p in (ROOT / folder).rglob("*.py")]
    assert not any("Tracer" in source for source in sources)
