"""What a first real deployment needs beyond lint: storage that does not grow for ever,
the network path and permissions of every AWS API the functions call, KMS, capacity,
operations. Plain Python over template.yaml and the code; no account needed.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from test_deploy import TEMPLATE, _CfnLoader

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
