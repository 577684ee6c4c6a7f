"""The house's rules, checked on the code itself: each concern has one home.

- the run's files (commit records, ``_seen`` pointers, claims) are named in shared/runs.py only;
- every status's exit code, metric, tally and Lambda action come from one table;
- environment variables are read in shared/config.py only;
- shared/ imports no worker, and no module imports itself back through another.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shared import errors
from shared.outcomes import STATUS_TABLE, TALLIES, LambdaAction, Outcome, Status

REPO = Path(__file__).resolve().parents[1]
CODE = sorted([*(REPO / "shared").rglob("*.py"), *(REPO / "workers").rglob("*.py")])
RUN_FILE_NAMES = ("manifest.json", "error.json", "_seen", ".claim.")


def _strings(path: Path) -> list[tuple[int, str]]:
    """String constants of a module that are not docstrings (what the code uses, not what it says)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_only_runs_py_names_the_run_s_files() -> None:
    found = [f"{path.relative_to(REPO)}:{line}: {value!r}" for path in CODE if path.name != "runs.py"
             for line, value in _strings(path) if any(name in value for name in RUN_FILE_NAMES)]
    assert found == []


def test_the_check_above_finds_a_record_name_where_it_is_used(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('"""Mentions manifest.json in prose."""\nPATH = "run/manifest.json"\n')
    assert [value for _, value in _strings(module)] == ["run/manifest.json"]


def test_environment_is_read_in_config_only() -> None:
    readers = []
    for path in CODE:
        if path.relative_to(REPO).as_posix() == "shared/config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb") \
                    and isinstance(node.value, ast.Name) and node.value.id == "os":
                readers.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert readers == []


def test_every_status_has_one_row_and_its_exit_code_matches_the_error_tree() -> None:
    assert set(STATUS_TABLE) == set(Status)
    faces = STATUS_TABLE
    assert faces[Status.FAILED].exit_code == errors.PermanentInputError.exit_code
    assert faces[Status.RETRYABLE].exit_code == errors.RetryableError.exit_code
    assert faces[Status.REFUSED].exit_code == errors.RefusedPath.exit_code == errors.UsageError.exit_code
    assert faces[Status.INTERNAL_ERROR].exit_code == errors.MountworksError.exit_code == errors.EXIT_INTERNAL
    # Lambda retries exactly what is retryable, raises on bugs, and reports the rest
    assert {s for s, f in faces.items() if f.lambda_action is LambdaAction.RETRY} == {Status.RETRYABLE}
    assert {s for s, f in faces.items() if f.lambda_action is LambdaAction.RAISE} == {Status.INTERNAL_ERROR}
    # a commit stands exactly behind the statuses that come with a record
    assert {s for s, f in faces.items() if f.committed} == {Status.DONE, Status.ALREADY_DONE, Status.FAILED,
                                                            Status.ALREADY_FAILED}
    assert TALLIES == ("done", "skipped", "failed", "retryable", "refused", "internal_error")


@pytest.mark.parametrize("status", list(Status))
def test_an_outcome_s_faces_are_its_status_s_row(status: Status) -> None:
    outcome = Outcome(status, "ingest/a", "w")
    assert outcome.exit_code == STATUS_TABLE[status].exit_code
    assert outcome.committed == STATUS_TABLE[status].committed
    assert outcome.summary()["status"] == status.value


def test_every_exception_class_lives_in_the_error_tree() -> None:
    """Our own exceptions are errors.py's; a worker's private control-flow signals (never
    raised out of its core) are the only others, and they do not derive from ours."""
    outside = []
    for path in CODE:
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b) for b in node.bases}
                if bases & {"MountworksError", "PermanentInputError", "RetryableError", "UsageError",
                            "RefusedPath", "CorruptInput", "UnsupportedInput", "LimitExceeded"}:
                    outside.append(f"{path.relative_to(REPO)}:{node.name}")
    assert outside == []


def test_the_error_tree_drawn_in_the_docstring_is_the_code_s() -> None:
    doc = errors.__doc__ or ""
    drawn = {line.split("──")[1].split()[0] for line in doc.splitlines() if "──" in line}
    drawn.add("MountworksError")
    tree, todo = set(), [errors.MountworksError]
    while todo:
        cls = todo.pop()
        tree.add(cls.__name__)
        todo.extend(c for c in cls.__subclasses__() if c.__module__ == errors.__name__)
    assert drawn == tree


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _module_of(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_shared_imports_no_worker() -> None:
    offenders = {p.name: sorted(n for n in _imports(p) if n == "workers" or n.startswith("workers."))
                 for p in (REPO / "shared").glob("*.py")}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_no_import_cycle_between_the_project_s_modules() -> None:
    files = sorted([*(REPO / "shared").rglob("*.py"), *(REPO / "workers").rglob("*.py")])
    modules = {_module_of(p): p for p in files}
    graph: dict[str, set[str]] = {}
    # ``from pkg import name`` is an import of pkg; a package's __init__ importing its own
    # submodules for the type checker only is not a cycle (TYPE_CHECKING blocks are skipped)
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        checking = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                    and ast.unparse(block.test) == "TYPE_CHECKING" for n in ast.walk(block)}
        graph[name] = {m for node in ast.walk(tree) if id(node) not in checking
                       for m in _node_imports(node) if m in modules and m != name}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def _node_imports(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return set()
