"""The registry and the worker seam: in-repo workers, installed ones, and the house's floors.

A worker from another distribution is found through the ``mountworks.workers`` entry
point group; here a distribution is made on disk (a ``.dist-info`` folder on sys.path),
as pip would leave it, so discovery runs through the real ``importlib.metadata``
(tests/test_extending.py installs a real package into a fresh virtual environment).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import workers.registry as registry
from shared.errors import UsageError
from shared.worker import WorkerSpec, core_problems, spec_problems

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path where tests install fake distributions."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(TESTS))
    registry.installed_entry_points.cache_clear()
    yield tmp_path
    registry.installed_entry_points.cache_clear()


def install(site: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str] | None = None) -> None:
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n" + "\n".join(lines) + "\n")
    for name, source in (modules or {}).items():
        (site / f"{name}.py").write_text(source)


@pytest.mark.parametrize("name", list(registry.WORKERS))
def test_every_in_repo_worker_is_a_well_formed_spec_with_a_typed_core(name: str) -> None:
    spec = registry.get_worker(name)
    assert spec.name == name
    assert spec_problems(spec) == []
    assert core_problems(spec) == []


def test_an_installed_worker_is_found_through_its_entry_point(site: Path) -> None:
    install(site, "echo-dist", {"test-echo": "echo_worker:SPEC"})
    assert "test-echo" in registry.worker_names()
    spec = registry.get_worker("test-echo")
    assert spec.name == "test-echo" and core_problems(spec) == []
    assert [s.name for s in registry.all_workers()][-1] == "test-echo"


def test_an_in_repo_worker_wins_over_an_entry_point_of_the_same_name(site: Path) -> None:
    install(site, "shadow-dist", {"image-resize": "echo_worker:SPEC"})
    assert registry.get_worker("image-resize").core_module == "workers.image_resize.core"
    assert registry.worker_names().count("image-resize") == 1


@pytest.mark.parametrize(("target", "modules", "message"), [
    ("nowhere_module:SPEC", {}, "cannot be loaded: ModuleNotFoundError"),
    ("not_a_spec:SPEC", {"not_a_spec": "SPEC = {'name': 'bad-worker'}\n"}, "is a dict, not a shared.worker.WorkerSpec"),
    ("misnamed:SPEC", {"misnamed": "from echo_worker import SPEC\n"}, "its SPEC is named 'test-echo'"),
], ids=["missing-module", "not-a-spec", "misnamed"])
def test_a_broken_entry_point_is_a_usage_error_naming_it(site: Path, target: str, modules: dict[str, str],
                                                         message: str) -> None:
    install(site, "broken-dist", {"bad-worker": target}, modules)
    with pytest.raises(UsageError, match="bad-worker") as caught:
        registry.get_worker("bad-worker")
    assert message in caught.value.message and "broken-dist" in caught.value.message


def test_an_unknown_worker_lists_the_installed_ones(site: Path) -> None:
    install(site, "echo-dist", {"test-echo": "echo_worker:SPEC"})
    with pytest.raises(UsageError, match=r"unknown worker 'nope'; available: image-resize, .*test-echo"):
        registry.get_worker("nope")


def _spec(**changes: Any) -> WorkerSpec:
    from echo_worker import SPEC

    spec: WorkerSpec = SPEC._replace(**changes)
    return spec


@pytest.mark.parametrize(("changes", "problem"), [
    ({"name": "a/b"}, "plain folder name"),
    ({"name": ""}, "plain folder name"),
    ({"name": "Text_Stats"}, "lowercase words joined by '-'"),  # the template could not name its resources
    ({"version": ""}, "version must be"),
    ({"extensions": frozenset({"txt"})}, "lower-case suffixes"),
    ({"extensions": frozenset({".TXT"})}, "lower-case suffixes"),
    ({"sniff": None}, "sniff must be callable"),
    ({"core_module": ""}, "core_module"),
], ids=["slash", "empty-name", "not-kebab-case", "no-version", "no-dot", "upper-case", "sniff", "core"])
def test_a_malformed_spec_is_named_before_any_run(site: Path, changes: dict[str, Any], problem: str) -> None:
    problems = spec_problems(_spec(**changes))
    assert len(problems) == 1 and problem in problems[0]


@pytest.mark.parametrize(("source", "problem"), [
    ("def proces(source, out, options, ctx):\n    return {}\n", "has no process() function"),
    ("def process(source, out, ctx):\n    return {}\n", "must take ('source', 'out', 'options', 'ctx')"),
    ("import nowhere_at_all\n", "cannot be imported"),
], ids=["misspelt", "wrong-parameters", "broken-import"])
def test_a_misspelt_or_mistyped_core_fails_the_seam_check(site: Path, source: str, problem: str) -> None:
    (site / "bad_core.py").write_text(source)
    sys.modules.pop("bad_core", None)
    problems = core_problems(_spec(core_module="bad_core"))
    assert len(problems) == 1 and problem in problems[0]
