"""The backfill state machine's JSONata expressions, run by the real JSONata engine.

Step Functions evaluates ``{% ... %}`` expressions with JSONata; so do these tests, with
the ``jsonata`` package from the npm registry under node (``tests/jsonata``, installed by
``npm ci --prefix tests/jsonata``). Every expression in the definition must have cases
here (a new one without cases fails), and the payload the map hands the worker is fed to
the real handler, so key spellings (spaces, ``+``, upper-case suffixes) survive the trip.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_deploy import TEMPLATE, _CfnLoader

from shared.config import MountConfig
from shared.events import work_items
from shared.runtime import handle_event
from workers.cli import LocalContext
from workers.registry import WORKERS, get_worker

pytestmark = pytest.mark.deploy

JSONATA_DIR = Path(__file__).resolve().parent / "jsonata"
ARN = "arn:aws:lambda:eu-west-1:123456789012:function:stack-{worker}"
PREFIX = "data/mw/ingest/"
# the parameters' defaults: 0 = each worker's own batch size and concurrency (its deploy.py)
SUBSTITUTIONS = {"BucketName": "bucket", "IngestKeyPrefix": PREFIX, "MaxConcurrency": "0", "BatchSize": "0",
                 "ToleratedFailurePercentage": "5"}
MAP = "States.Backfill"
CHILD = f"{MAP}.ItemProcessor.States"
UNDEFINED = object()  # JSONata's "no value"


def _function_arn(name: str) -> str:
    worker = re.sub(r"(?<!^)([A-Z])", r"-\1", name.removesuffix("FunctionArn")).lower()
    return ARN.format(worker=worker)


def substituted(**overrides: str) -> dict[str, Any]:
    """The state machine definition with its DefinitionSubstitutions filled in, as deployed."""
    template = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)
    machine = template["Resources"]["BackfillStateMachine"]["Properties"]
    given = {**SUBSTITUTIONS, **overrides}
    values = {name: given.get(name) or _function_arn(name) for name in machine["DefinitionSubstitutions"]}
    text = json.dumps(machine["Definition"])
    text = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], text)
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@pytest.fixture(scope="module")
def definition() -> dict[str, Any]:
    return substituted()


def expressions(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, expression) of every JSONata string in the definition."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from expressions(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from expressions(value, f"{path}[{i}]")
    elif isinstance(node, str) and node.strip().startswith("{%"):
        yield path, node.strip().removeprefix("{%").removesuffix("%}").strip()


def evaluate(cases: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Evaluate (expression, bindings) pairs in one node process; raise on a JSONata error."""
    node = shutil.which("node")
    if node is None or not (JSONATA_DIR / "node_modules" / "jsonata").is_dir():
        pytest.skip("node and the jsonata package are needed (npm ci --prefix tests/jsonata)")
    payload = json.dumps([{"expression": e, "bindings": b} for e, b in cases])
    done = subprocess.run([node, str(JSONATA_DIR / "evaluate.js")], input=payload, capture_output=True,
                          text=True, check=True, timeout=60)
    results = []
    for (expression, _), result in zip(cases, json.loads(done.stdout), strict=True):
        assert "error" not in result, f"{expression}: {result}"
        results.append(UNDEFINED if result.get("undefined") else result["value"])
    return results


def listed(*keys: str) -> list[dict[str, Any]]:
    """Items as the S3 ListObjectsV2 ItemReader gives them."""
    return [{"Key": k, "Size": 10, "Etag": '"e"', "LastModified": 1, "StorageClass": "STANDARD"} for k in keys]


def route_of(name: str) -> dict[str, Any]:
    """What the Route state must assign for a worker: its function, suffixes and capacity."""
    deploy = importlib.import_module(WORKERS[name] + ".deploy").DEPLOY
    return {"function": ARN.format(worker=name), "extensions": sorted(get_worker(name).extensions),
            "batchSize": deploy.backfill_batch_size, "maxConcurrency": deploy.max_concurrency}


IMAGE_ROUTE = route_of("image-resize")
VIDEO_ROUTE = route_of("video-transcode")
BATCH_INPUT = {"function": IMAGE_ROUTE["function"], "extensions": IMAGE_ROUTE["extensions"],
               "options": {"sizes": [320]}}
ONE = listed(f"{PREFIX}a b+c.JPG")
SEVERAL = listed(f"{PREFIX}photos/cat.jpg", f"{PREFIX}photos/notes.txt", f"{PREFIX}photos/x y+z.Png",
                 f"{PREFIX}photos/a.jpg/readme", f"{PREFIX}photos/no-extension", f"{PREFIX}photos/IMG 1+2.HEIC")
KEPT = [SEVERAL[0], SEVERAL[2], SEVERAL[5]]
NONE: list[dict[str, Any]] = []
REFUSED = {"results": [], "refused": "'BatchInput' must be an object"}
DONE = {"results": [{"input": "ingest/a.jpg", "worker": "image-resize", "status": "done", "run_id": "r"}]}


def child(items: list[dict[str, Any]], batch_input: dict[str, Any] = BATCH_INPUT) -> dict[str, Any]:
    return {"states": {"input": {"Items": items, "BatchInput": batch_input}}}


def states_input(value: Any) -> dict[str, Any]:
    return {"states": {"input": value}}


def route_cases() -> list[tuple[dict[str, Any], Any]]:
    cases: list[tuple[dict[str, Any], Any]] = [(states_input({"worker": name}), route_of(name)) for name in WORKERS]
    return [*cases, (states_input({"worker": "nope"}), UNDEFINED), (states_input({}), UNDEFINED)]


# path -> [(bindings, expected value)]
CASES: dict[str, list[tuple[dict[str, Any], Any]]] = {
    "States.Route.Assign.route": route_cases(),
    "States.KnownWorker.Choices[0].Condition": [({"route": IMAGE_ROUTE, **states_input({})}, True),
                                                (states_input({"worker": "nope"}), False)],
    f"{MAP}.ItemReader.Arguments.Prefix": [(states_input({"worker": "w", "prefix": "photos/"}), f"{PREFIX}photos/"),
                                           (states_input({"worker": "w"}), PREFIX),
                                           (states_input({"prefix": "a b+c/"}), f"{PREFIX}a b+c/")],
    f"{MAP}.ItemBatcher.MaxItemsPerBatch": [({"route": IMAGE_ROUTE}, IMAGE_ROUTE["batchSize"]),
                                            ({"route": VIDEO_ROUTE}, 1)],  # one video per invocation
    f"{MAP}.ItemBatcher.BatchInput": [
        ({"route": IMAGE_ROUTE, **states_input({"worker": "image-resize", "options": {"sizes": [320]}})},
         BATCH_INPUT),
        ({"route": IMAGE_ROUTE, **states_input({"worker": "image-resize"})}, {**BATCH_INPUT, "options": {}})],
    f"{MAP}.MaxConcurrency": [({"route": IMAGE_ROUTE}, IMAGE_ROUTE["maxConcurrency"]),
                              ({"route": VIDEO_ROUTE}, VIDEO_ROUTE["maxConcurrency"])],
    f"{MAP}.ToleratedFailurePercentage": [({}, 5)],
    f"{CHILD}.KeepWorkerSuffixes.Output": [
        (child(ONE), {"Items": ONE, "BatchInput": BATCH_INPUT}),  # one item stays an array
        (child(SEVERAL), {"Items": KEPT, "BatchInput": BATCH_INPUT}),
        (child(NONE), {"Items": [], "BatchInput": BATCH_INPUT}),
        (child(listed(f"{PREFIX}only.txt")), {"Items": [], "BatchInput": BATCH_INPUT})],
    f"{CHILD}.AnyLeft.Choices[0].Condition": [(child(ONE), True), (child(KEPT), True), (child(NONE), False)],
    f"{CHILD}.InvokeWorker.Arguments.FunctionName": [(child(ONE), IMAGE_ROUTE["function"])],
    f"{CHILD}.InvokeWorker.Arguments.Payload": [
        (child(ONE), {"Items": ONE, "BatchInput": {"options": {"sizes": [320]}}}),
        (child(KEPT), {"Items": KEPT, "BatchInput": {"options": {"sizes": [320]}}})],
    f"{CHILD}.InvokeWorker.Output": [({"states": {"result": {"Payload": DONE}}}, DONE)],
    f"{CHILD}.Recognised.Choices[0].Condition": [(states_input(REFUSED), True),
                                                 (states_input({"results": []}), True),
                                                 (states_input(DONE), False)],
    f"{CHILD}.BatchRefused.Cause": [(states_input(REFUSED), REFUSED["refused"]),
                                    (states_input({"results": []}), "the worker returned no result for this batch")],
}


def test_every_expression_in_the_state_machine_has_cases(definition: dict[str, Any]) -> None:
    assert sorted(path for path, _ in expressions(definition)) == sorted(CASES)


def test_every_expression_gives_what_the_workers_expect(definition: dict[str, Any]) -> None:
    found = dict(expressions(definition))
    flat = [(path, found[path], bindings, expected) for path, cases in CASES.items() for bindings, expected in cases]
    values = evaluate([(expression, bindings) for _, expression, bindings, _ in flat])
    for (path, _, bindings, expected), value in zip(flat, values, strict=True):
        assert value == expected, f"{path} with {bindings}: got {value!r}"


def test_the_payload_reaches_the_handler_with_each_key_intact(definition: dict[str, Any], mount: Path) -> None:
    """Keys with spaces and ``+`` come from ListObjectsV2 unencoded and must stay so."""
    found = dict(expressions(definition))
    kept, = evaluate([(found[f"{CHILD}.KeepWorkerSuffixes.Output"], child(SEVERAL))])
    payload, = evaluate([(found[f"{CHILD}.InvokeWorker.Arguments.Payload"], states_input(kept))])
    cfg = MountConfig.load(mount, bucket_prefix="data/mw")
    assert [item.input.rel.as_posix() for item in work_items(payload, cfg) if item.input] == [
        "ingest/photos/cat.jpg", "ingest/photos/x y+z.Png", "ingest/photos/IMG 1+2.HEIC"]


def test_a_batch_the_handler_refuses_fails_the_child_with_a_named_error(definition: dict[str, Any],
                                                                         mount: Path) -> None:
    """The handler answers an unreadable batch without raising; the map child must not succeed."""
    cfg = MountConfig.load(mount)
    response = handle_event(get_worker("image-resize"), {"Items": ONE, "BatchInput": "not an object"},
                            LocalContext("image-resize", 60), cfg)
    assert response["results"] == [] and response["refused"]
    states = definition["States"]["Backfill"]["ItemProcessor"]["States"]
    assert states["InvokeWorker"]["Next"] == "Recognised"
    condition, = evaluate([(dict(expressions(definition))[f"{CHILD}.Recognised.Choices[0].Condition"],
                            states_input(response))])
    assert condition is True
    target = states[states["Recognised"]["Choices"][0]["Next"]]
    assert (target["Type"], target["Error"]) == ("Fail", "BatchRefused")
    assert states[states["Recognised"]["Default"]]["Type"] == "Succeed"


def test_the_backfill_parameters_override_each_workers_capacity() -> None:
    """BackfillBatchSize / BackfillMaxConcurrency above 0 win over the worker's own values."""
    found = dict(expressions(substituted(BatchSize="7", MaxConcurrency="3")))
    batch, concurrency = evaluate([(found[f"{MAP}.ItemBatcher.MaxItemsPerBatch"], {"route": VIDEO_ROUTE}),
                                   (found[f"{MAP}.MaxConcurrency"], {"route": VIDEO_ROUTE})])
    assert (batch, concurrency) == (7, 3)
