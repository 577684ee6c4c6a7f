"""The ``mountworks`` command line: a thin layer over the shared runtime.

    mountworks run WORKER INPUT [--root DIR] [--option KEY=VALUE ...] [--wait S] [--retry-failed]
    mountworks backfill [--root DIR] [--worker NAME ...] [--jobs N] [--dry-run] [--retry-failed]
                        [--engine local|lambda|stepfunctions] [--report FILE.html] [--quiet]
    mountworks verify [--root DIR] [PATH]
    mountworks invoke WORKER EVENT.json [--root DIR] [--timeout S]
    mountworks show WORKER INPUT [--root DIR] [--option KEY=VALUE ...] [--all]
    mountworks --version

Global flags (``--log-level``) go before or after the subcommand.

stdout carries only JSON (a manifest, an error record, a summary, a response); logs and
the progress bar go to stderr. Exit codes are the contract's: 0 done, 3 permanent input
error, 75 retryable, 2 usage, 1 internal error, 4 verify found a mismatch, 5 show found
nothing committed for the input's current content.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from shared import observability as obs
from shared.config import MountConfig, cli_log_level, function_cpu_count, key_layout, mount_configured
from shared.errors import (
    EXIT_INTERNAL,
    EXIT_RETRYABLE,
    EXIT_USAGE,
    INPUT_NOT_VISIBLE,
    MountworksError,
    RefusedPath,
    RetryableError,
    UsageError,
    exit_code_for,
)
from shared.options import options_for, parse_cli_options, resolve_options
from shared.outcomes import Status
from shared.paths import input_from_path
from shared.worker import WorkerSpec
from workers.registry import all_workers, deployed_concurrency, get_worker, worker_names


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"mountworks: {message}\n")
    return code


def _checked_options(pairs: list[str], specs: Sequence[WorkerSpec]) -> dict[str, Any]:
    """``-o`` pairs, checked against the selected workers and scoped to them (``worker:key``)."""
    return resolve_options(parse_cli_options(pairs), {s.name: s.parse_options for s in specs}, worker_names)


def _config(args: argparse.Namespace) -> MountConfig:
    return MountConfig.load(args.root, ingest_prefix=args.ingest_prefix, workspace_prefix=args.workspace_prefix)


def cmd_run(args: argparse.Namespace) -> int:
    from shared.events import WorkItem
    from shared.isolation import IsolatedPool

    spec = get_worker(args.worker)
    cfg = _config(args)
    options = options_for(spec.name, _checked_options(args.option, [spec]))  # usage errors before any work
    ref = input_from_path(cfg, args.input)
    if ref is None:
        raise UsageError(f"INPUT must be a path under {cfg.ingest_prefix}/ relative to the mount root, "
                         f"for example {cfg.ingest_prefix}/photos/cat.jpg (got {args.input!r})")
    item = WorkItem("cli", args.input, input=ref, options=options)
    if args.no_isolation:
        from shared.runtime import run_item

        outcome = run_item(spec, item, cfg, wait_seconds=args.wait, retry_failed=args.retry_failed)
    else:
        pool = IsolatedPool(1, cfg, args.retry_failed, wait_seconds=args.wait, keep_records=True)
        pool.submit(spec, item)
        outcome = pool.collect(block=True)[0]
        pool.close()
    if outcome.record is not None:
        _print_json(outcome.record)
    elif outcome.status not in (Status.REFUSED, Status.INTERNAL_ERROR):  # those say why on stderr
        _print_json(outcome.summary())
    if outcome.message and not outcome.committed:
        if outcome.code == INPUT_NOT_VISIBLE:  # the message names the path; say how to wait for it
            sys.stderr.write(f"mountworks: {outcome.message}, or wait for it with --wait SECONDS\n")
        else:
            sys.stderr.write(f"mountworks: {outcome.input}: {outcome.message}\n")
    return outcome.exit_code


def cmd_backfill(args: argparse.Namespace) -> int:
    from shared.backfill import Progress, Summary, backfill

    # lambda without a mount on this machine routes by the objects' first bytes (S3 GetObject)
    wants_mount = args.engine == "local" or args.root or (args.engine == "lambda" and mount_configured())
    cfg = _config(args) if wants_mount else None
    specs = [get_worker(name) for name in args.worker] if args.worker else all_workers()
    options = _checked_options(args.option, specs)
    if args.jobs is None:  # read here, not when the parser is built for every command
        args.jobs = function_cpu_count()
    progress = Progress(sys.stderr, enabled=not (args.no_progress or args.quiet))
    extra: dict[str, Any] = {}
    summary: Summary
    if args.engine == "local":
        assert cfg is not None
        with progress.guard():
            summary = backfill(cfg, specs, jobs=args.jobs, options=options, dry_run=args.dry_run,
                               retry_failed=args.retry_failed, progress=progress)
    elif args.engine == "lambda":
        from shared.engines import LambdaEngine, aws_client, function_names

        if not args.bucket:
            raise UsageError("--engine lambda needs --bucket (the bucket the mount shows)")
        functions = function_names(specs, args.function, args.function_pattern)
        ingest, bucket_prefix = key_layout(args.ingest_prefix)
        engine = LambdaEngine(cfg, specs, args.bucket, functions, aws_client("lambda"), aws_client("s3"),
                              jobs=args.jobs, options=options, retry_failed=args.retry_failed, dry_run=args.dry_run,
                              ingest_prefix=ingest, bucket_prefix=bucket_prefix,
                              concurrency={s.name: c for s in specs if (c := deployed_concurrency(s.name))})
        summary = engine.run(args.prefix, progress)
        extra = {"bucket": args.bucket, "functions": functions}
    else:
        from shared.engines import StepFunctionsEngine, aws_client

        if not args.state_machine_arn:
            raise UsageError("--engine stepfunctions needs --state-machine-arn (the stack's BackfillStateMachineArn)")
        sfn = StepFunctionsEngine(args.state_machine_arn, specs, aws_client("stepfunctions"), options=options,
                                  poll_seconds=args.poll, timeout_seconds=args.watch_timeout)
        summary, executions = sfn.run(args.prefix, None if args.quiet else sys.stderr)
        extra = {"state_machine_arn": args.state_machine_arn, "executions": executions}
    root = {"root": str(cfg.root)} if cfg is not None else {}
    _print_json({**root, "dry_run": args.dry_run, **extra, **summary.to_json()})
    if not args.quiet or args.report:
        from shared.report import html_report, table

        if not args.quiet:
            sys.stderr.write(table(summary))
        if args.report:
            context = {k: v for k, v in {**root, **extra}.items() if isinstance(v, str)}
            Path(args.report).write_text(html_report(summary, context), encoding="utf-8")
    return summary.exit_code


def cmd_verify(args: argparse.Namespace) -> int:
    from shared.verify import verify_tree

    cfg = _config(args)
    report = verify_tree(cfg, args.path)
    _print_json(report.to_json())
    for problem in report.problems:
        sys.stderr.write(f"mountworks verify: {problem}\n")
    return report.exit_code


def cmd_show(args: argparse.Namespace) -> int:
    """The committed record for the input's current content (shared.reader does the look-up)."""
    from shared.errors import EXIT_NOT_COMMITTED
    from shared.outcomes import STATUS_TABLE
    from shared.reader import IN_PROGRESS, NOT_COMMITTED, MountReader, commit_status

    spec = get_worker(args.worker)
    reader = MountReader(_config(args))
    if args.all:
        runs = reader.runs(spec.name, args.input)
        _print_json({"worker": spec.name, "input": args.input,
                     "runs": [{"run_id": c.run_id, "status": commit_status(c), "record": c.record} for c in runs]})
        return 0 if runs else _fail(f"{args.input}: no run of {spec.name} is committed", EXIT_NOT_COMMITTED)
    result = reader.result(spec, args.input, options_for(spec.name, parse_cli_options(args.option)))
    if result.hashed:
        sys.stderr.write(f"mountworks show: {args.input}: its size and mtime match no commit's pointer "
                         "(a new upload, a touched file, or a run committed elsewhere): its content was hashed\n")
    if result.status == IN_PROGRESS:
        return _fail(f"{args.input}: a live claim holds its run; nothing is committed yet, try again later",
                     EXIT_RETRYABLE)
    if result.status == NOT_COMMITTED or result.commit is None:
        return _fail(f"{args.input}: nothing of {spec.name} is committed for its current content "
                     "(never processed with these options, or the file changed since)", EXIT_NOT_COMMITTED)
    _print_json(result.commit.record)
    return STATUS_TABLE[Status.ALREADY_FAILED if result.commit.failed else Status.ALREADY_DONE].exit_code


class LocalContext:
    """Enough of Lambda's context object for the handler to run locally."""

    def __init__(self, worker: str, timeout: float) -> None:
        import time
        import uuid  # here: ~3 ms that only `invoke` needs

        self.aws_request_id = f"local-{uuid.uuid4()}"
        self.function_name = f"mountworks-{worker}"
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{self.function_name}"
        self.memory_limit_in_mb = 0
        self.log_group_name = "local"
        self.log_stream_name = "local"
        self._ends = time.monotonic() + timeout
        self._time = time

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._ends - self._time.monotonic()) * 1000))


def cmd_invoke(args: argparse.Namespace) -> int:
    from shared.runtime import handle_event

    spec = get_worker(args.worker)
    cfg = _config(args)
    try:
        event = json.loads(Path(args.event).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the event file {args.event}: {exc}") from exc
    context = LocalContext(spec.name, args.timeout)
    try:
        response = handle_event(spec, event, context, cfg)
    except RetryableError as exc:
        _print_json({"error": {"code": exc.code, "message": exc.message}, "retryable": True})
        return EXIT_RETRYABLE
    _print_json(response)
    return 0


EXAMPLES = {
    "run": ['mountworks run image-resize "ingest/photos/sample photo.jpg" --root demo-mount -o sizes=320,800',
            "mountworks run pdf-extract ingest/docs/sample.pdf --root demo-mount -o pages=1"],
    "backfill": ["mountworks backfill --root demo-mount --jobs 2 --report report.html > summary.json",
                 "mountworks backfill --root demo-mount -o quality=70 -o pdf-extract:parallel=1 --retry-failed"],
    "verify": ["mountworks verify --root demo-mount",
               "mountworks verify --root demo-mount ingest/photos"],
    "invoke": ["mountworks invoke image-resize samples/events/s3-put.json --root demo-mount"],
    "show": ['mountworks show image-resize "ingest/photos/sample photo.jpg" --root demo-mount',
             "mountworks show pdf-extract ingest/docs/sample.pdf --root demo-mount --all"],
}
OPTION_HELP = ("a worker option; repeat -o for more. KEY=VALUE goes to every selected worker that has KEY, "
               "WORKER:KEY=VALUE to that worker only (it wins over KEY=VALUE). A key no selected worker has, "
               "or one given twice, is a usage error")


def _epilog(command: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[command])


def _global_flags(p: argparse.ArgumentParser, *, top: bool) -> None:
    """Flags accepted before and after the subcommand. On a subcommand they default to
    SUPPRESS, so an absent one leaves the value given before it (or the default) alone."""
    p.add_argument("--log-level", default=cli_log_level("WARNING") if top else argparse.SUPPRESS,
                   help="log level for the JSON logs on stderr (default WARNING)")


def _mount_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", help="the mount root (default: $MOUNTWORKS_MOUNT)")
    p.add_argument("--ingest-prefix", help="input prefix below the root (default: ingest)")
    p.add_argument("--workspace-prefix", help="output prefix below the root (default: workspace)")


class _VersionAction(argparse.Action):
    """``--version``, looked up only when asked for (reading the installed metadata costs
    every start of the command a few milliseconds otherwise)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show the version and exit", **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        sys.stdout.write(f"mountworks {_version()}\n")
        parser.exit()


class _HelpWithWorkers(argparse.RawDescriptionHelpFormatter):
    """Fills in ``{WORKERS}`` only when help is printed: listing the installed workers scans
    every distribution's metadata (~10 ms), which a ``run`` must not pay to build its parser."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        if text and WORKERS_PLACEHOLDER in text:
            return text.replace(WORKERS_PLACEHOLDER, ", ".join(worker_names()))
        return text


WORKERS_PLACEHOLDER = "{WORKERS}"


def _subcommand(sub: Any, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand with the global and mount flags and its examples."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=description, epilog=_epilog(name),
                                                formatter_class=_HelpWithWorkers)
    _global_flags(p, top=False)
    _mount_flags(p)
    return p


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mountworks")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mountworks",
        description="Process media and documents in place on an S3 Files mount (or any local folder).",
        epilog="Exit codes: 0 done, 3 permanent input error, 75 retryable, 2 usage error, 1 internal error, "
        "4 verify found a mismatch, 5 show found nothing committed. `mountworks COMMAND --help` shows a command's "
        "flags and examples.",
    )
    parser.add_argument("--version", action=_VersionAction)
    _global_flags(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    names = WORKERS_PLACEHOLDER  # _HelpWithWorkers lists them when help is printed
    run = _subcommand(sub, "run", "process one input file", "Process one input file and print its manifest "
                      "(or error record) as JSON.")
    run.add_argument("worker", help=f"worker name ({names})")
    run.add_argument("input", help="input path relative to the mount root, under ingest/")
    run.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE", help=OPTION_HELP)
    run.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                     help="wait this long for an input that is not visible yet (default 0)")
    run.add_argument("--retry-failed", action="store_true", help="process again an input that failed for good")
    run.add_argument("--no-isolation", action="store_true", help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)

    bf = _subcommand(sub, "backfill", "process everything under ingest/",
                     "Walk ingest/, route each file to the workers that accept it, skip committed runs, "
                     "show progress and a table on stderr, and print a JSON summary on stdout.")
    bf.add_argument("--worker", action="append", default=[], metavar="NAME", help=f"only these workers ({names})")
    bf.add_argument("--jobs", "-j", type=int, default=None,
                    help="parallel inputs (default: the CPUs this process can use, within a container's quota)")
    bf.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE", help=OPTION_HELP)
    bf.add_argument("--dry-run", action="store_true", help="route and count, process nothing")
    bf.add_argument("--retry-failed", action="store_true", help="process again inputs that failed for good")
    bf.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    bf.add_argument("--quiet", "-q", action="store_true", help="no progress and no summary table on stderr")
    bf.add_argument("--report", metavar="FILE.html", help="also write a one-page HTML report")
    bf.add_argument("--engine", choices=("local", "lambda", "stepfunctions"), default="local",
                    help="local: process pool on the mount (default); lambda: invoke the deployed functions; "
                         "stepfunctions: start the Distributed Map backfill")
    bf.add_argument("--prefix", default="", help="only inputs below ingest/PREFIX (lambda, stepfunctions)")
    bf.add_argument("--bucket", help="the bucket the mount shows (lambda: with --root or MOUNTWORKS_MOUNT it "
                                     "routes and skips through the mount, else by each object's first bytes "
                                     "(one ranged S3 GetObject) and the functions skip committed inputs)")
    bf.add_argument("--function", action="append", default=[], metavar="WORKER=FUNCTION",
                    help="the Lambda function of a worker (lambda)")
    bf.add_argument("--function-pattern", metavar="PATTERN",
                    help="function name pattern with {worker} (lambda; default mountworks-{worker})")
    bf.add_argument("--state-machine-arn", help="the backfill state machine (stepfunctions)")
    bf.add_argument("--poll", type=float, default=10.0, metavar="SECONDS",
                    help="progress polling interval (stepfunctions)")
    bf.add_argument("--watch-timeout", type=float, default=None, metavar="SECONDS",
                    help="stop watching after this long; the executions keep running (stepfunctions)")
    bf.set_defaults(func=cmd_backfill)

    vf = _subcommand(sub, "verify", "re-hash committed outputs against their manifests",
                     "Re-hash every committed output against its manifest (exit 4 names each mismatch).")
    vf.add_argument("path", nargs="?", help="only these runs: an input or folder under ingest/, or a path "
                    "under workspace/ (relative to the root)")
    vf.set_defaults(func=cmd_verify)

    inv = _subcommand(sub, "invoke", "run a worker's Lambda handler on an event file",
                      "Run a worker's Lambda handler locally on an event file and print its response.")
    inv.add_argument("worker", help=f"worker name ({names})")
    inv.add_argument("event", help="a JSON event file")
    inv.add_argument("--timeout", type=float, default=900.0, help="the invocation's time budget in seconds")
    inv.set_defaults(func=cmd_invoke)

    show = _subcommand(sub, "show", "print the committed record for an input's current content",
                       "Print the committed manifest (exit 0) or error record (exit 3) for the input's current "
                       "content; 75 while a live claim holds it, 5 when nothing is committed.")
    show.add_argument("worker", help=f"worker name ({names})")
    show.add_argument("input", help="input path relative to the mount root, under ingest/")
    show.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                      help="the options the run was made with (they decide the run-id)")
    show.add_argument("--all", action="store_true", help="list every committed run of the input, newest first")
    show.set_defaults(func=cmd_show)
    return parser


def entry() -> NoReturn:
    """The ``mountworks`` command: :func:`main`, then exit without the interpreter's last
    full garbage collection. A run's objects need no collecting when the process ends, and
    that pass (over pypdf's, PDFium's and Powertools' objects) took ~35 ms of a 250 ms PDF
    run. Everything else still happens: atexit handlers, flushing, closing files."""
    code = main()
    gc.freeze()
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    obs.set_log_level(args.log_level)
    try:
        code: int = args.func(args)
        return code
    except (UsageError, RefusedPath) as exc:
        return _fail(exc.message, EXIT_USAGE)
    except MountworksError as exc:
        if args.command == "run":
            _print_json({"error": {"code": exc.code, "message": exc.message}})
        return _fail(exc.message, exit_code_for(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_RETRYABLE)
    except Exception as exc:  # a bug: say so plainly, keep the traceback for the report
        import traceback

        traceback.print_exc()
        return _fail(f"internal error: {type(exc).__name__}: {exc}", EXIT_INTERNAL)
