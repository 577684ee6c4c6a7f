"""Release checks: crash consistency, duplicate deliveries and hostile inputs, per worker.

    python scripts/reliability.py                      # the release run: 50 crash trials per worker
    python scripts/reliability.py --trials 3 --duplicates 4 --json out.json   # what CI runs

Everything goes through the real ``mountworks`` command line, as an operator would:

- crash: start ``run`` on a fresh copy of the worker's sample input, SIGKILL its whole
  process group at a random moment within the worker's normal run time, then check that
  every manifest on the mount still holds (outputs present, sizes and sha256 right), that
  nothing committed before changed by a byte, and that a re-run commits.
- duplicates: N concurrent ``run`` of one input: exactly one commit, the others exit 0
  (already done) or 75 (in progress), and a fresh mount makes byte-identical outputs
  (video with ``threads=1``: see REPRODUCIBLE_OPTIONS).
- hostile: every corpus file through every worker that accepts it (by content or by
  name): exit 0 or 3 (with an ``error.json``) within a time limit, under a memory limit,
  and no traceback on stderr.
- s3-faults: on moto's S3 server mounted with s3fs, the server stopped mid-run, s3fs's
  cache disk full, an upload failing with EIO (tests/s3faults.py): each run exits 75 with
  no traceback and nothing torn in the bucket, and a re-run commits. Needs s3fs, FUSE
  and root (for the cache tmpfs); ``--s3-trials`` trials of each.

Prints one JSON report on stdout; exits 1 when any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from samples.make_samples import make as make_samples  # noqa: E402
from shared.config import MountConfig  # noqa: E402
from shared.verify import verify_tree  # noqa: E402
from workers.registry import all_workers  # noqa: E402

CLI = [sys.executable, "-m", "workers"]
HOSTILE_TIMEOUT_S = 180.0
HOSTILE_MAX_RSS_MB = 1536.0

# The options under which a worker's outputs are byte-for-byte reproducible, where its
# defaults are not. Multi-threaded x264 runs its lookahead in a thread of its own, and at the
# end of the stream that thread decides the last frames' types with whatever frames have
# reached it by then: under CPU contention about one encode in fifteen differs from a frame near
# its end on (measured with ffmpeg 5.1 and a 2 s clip: ``sync-lookahead=0`` or ``threads=1`` removes it;
# the first costs 25% of the wall time of every encode, so the default keeps the thread).
REPRODUCIBLE_OPTIONS: dict[str, list[str]] = {"video-transcode": ["threads=1"]}


def _run(argv: list[str], *, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _committed(root: Path) -> dict[str, str]:
    """Every commit record and every output it lists, with their hashes."""
    found: dict[str, str] = {}
    for record in list(root.rglob("manifest.json")) + list(root.rglob("error.json")):
        found[str(record.relative_to(root))] = _sha(record)
        try:
            outputs = json.loads(record.read_text()).get("outputs") or []
        except ValueError:
            continue
        for output in outputs:
            path = root / output["path"]
            found[output["path"]] = _sha(path) if path.is_file() else "missing"
    return found


def sample_inputs(scratch: Path) -> dict[str, Path]:
    """One sample input per registered worker (by content, as backfill routes)."""
    made = make_samples(scratch)
    chosen: dict[str, Path] = {}
    for spec in all_workers():
        for path in made:
            with path.open("rb") as f:
                if spec.accepts(f.read(64)):
                    chosen.setdefault(spec.name, path)
    return chosen


def crash_trials(worker: str, sample: Path, trials: int, rng: random.Random) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"mw-crash-{worker}-"))
    (root / "ingest").mkdir()
    failures: list[str] = []
    killed_before = killed_after = 0
    try:
        baseline_dir = root / "ingest" / "baseline"
        baseline_dir.mkdir()
        shutil.copyfile(sample, baseline_dir / sample.name)
        started = time.monotonic()
        base = _run(["run", worker, f"ingest/baseline/{sample.name}", "--root", str(root)])
        baseline_s = time.monotonic() - started
        if base.returncode != 0:
            return {"trials": 0, "failures": [f"baseline run exited {base.returncode}: {base.stderr[-300:]}"]}
        for trial in range(trials):
            rel = f"ingest/trial-{trial}/{sample.name}"
            (root / rel).parent.mkdir(parents=True)
            shutil.copyfile(sample, root / rel)
            before = _committed(root)
            proc = subprocess.Popen([*CLI, "run", worker, rel, "--root", str(root)], cwd=REPO,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            time.sleep(rng.uniform(0, baseline_s * 1.1))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            cfg = MountConfig.load(root)
            report = verify_tree(cfg)
            failures += [f"trial {trial}: after kill: {p}" for p in report.problems]
            after = _committed(root)
            changed = [k for k, v in before.items() if after.get(k) != v]
            failures += [f"trial {trial}: committed file changed or vanished: {k}" for k in changed]
            trial_dir = root / "workspace" / worker / f"trial-{trial}"
            if list(trial_dir.rglob("manifest.json")):
                killed_after += 1
            else:
                killed_before += 1
            rerun = _run(["run", worker, rel, "--root", str(root)])
            if rerun.returncode != 0:
                failures.append(f"trial {trial}: re-run exited {rerun.returncode}: {rerun.stderr[-300:]}")
            if len(list(trial_dir.rglob("manifest.json"))) != 1:
                failures.append(f"trial {trial}: expected exactly one manifest after the re-run")
            failures += [f"trial {trial}: after re-run: {p}" for p in verify_tree(cfg).problems]
        return {"trials": trials, "baseline_s": round(baseline_s, 3), "killed_before_commit": killed_before,
                "killed_after_commit": killed_after, "failures": failures}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def duplicates(worker: str, sample: Path, copies: int) -> dict[str, Any]:
    roots = [Path(tempfile.mkdtemp(prefix=f"mw-dup-{worker}-")) for _ in range(2)]
    failures: list[str] = []
    options = [arg for option in REPRODUCIBLE_OPTIONS.get(worker, []) for arg in ("-o", option)]
    try:
        for root in roots:
            (root / "ingest").mkdir()
            shutil.copyfile(sample, root / "ingest" / sample.name)
        procs = [subprocess.Popen([*CLI, "run", worker, f"ingest/{sample.name}", "--root", str(roots[0]), *options],
                                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(copies)]
        codes = [p.wait(timeout=600) for p in procs]
        for p in procs:
            p.communicate()
        if not set(codes) <= {0, 75} or 0 not in codes:
            failures.append(f"exit codes {codes}: expected only 0 (done) and 75 (in progress)")
        manifests = list(roots[0].rglob("manifest.json"))
        if len(manifests) != 1:
            failures.append(f"{len(manifests)} commits from {copies} concurrent deliveries, expected exactly 1")
        again = _run(["run", worker, f"ingest/{sample.name}", "--root", str(roots[1]), *options])
        if again.returncode != 0:
            failures.append(f"fresh-mount run exited {again.returncode}")
        first, second = (sorted((Path(o["path"]).name, o["sha256"]) for o in
                                json.loads(next(r.rglob("manifest.json")).read_text())["outputs"])
                         for r in roots) if not failures else ([], [])
        if first != second:
            failures.append("outputs differ between two mounts: processing is not deterministic")
        return {"copies": copies, "exit_codes": sorted(codes), "failures": failures}
    finally:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)


def _child_limits() -> None:
    os.setsid()


def hostile(corpus: Path) -> dict[str, Any]:
    specs = all_workers()
    failures: list[str] = []
    tried: dict[str, int] = {s.name: 0 for s in specs}
    outcomes: dict[str, dict[str, int]] = {s.name: {} for s in specs}
    slowest = 0.0
    peak_rss_mb = 0.0
    for kind in sorted(p for p in corpus.iterdir() if p.is_dir()):
        for source in sorted(p for p in kind.iterdir() if p.is_file() and p.name != "SOURCES.md"):
            head = source.read_bytes()[:64]
            for spec in specs:
                if not (spec.accepts(head) or spec.hinted_by(source.name)):
                    continue
                root = Path(tempfile.mkdtemp(prefix="mw-hostile-"))
                try:
                    (root / "ingest").mkdir()
                    shutil.copyfile(source, root / "ingest" / source.name)
                    started = time.monotonic()
                    proc = subprocess.Popen([*CLI, "run", spec.name, f"ingest/{source.name}", "--root", str(root)],
                                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                            preexec_fn=_child_limits)
                    try:
                        out, err = proc.communicate(timeout=HOSTILE_TIMEOUT_S)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.communicate()
                        failures.append(f"{spec.name} {kind.name}/{source.name}: no answer in {HOSTILE_TIMEOUT_S}s")
                        continue
                    slowest = max(slowest, time.monotonic() - started)
                    # the largest RSS of any finished descendant so far (ffmpeg and forks included)
                    peak_rss_mb = max(peak_rss_mb, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
                    tried[spec.name] += 1
                    code = proc.returncode
                    label = {0: "done", 3: "permanent-error"}.get(code, f"exit-{code}")
                    if code == 3:
                        try:
                            label = json.loads(out)["error"]["code"]
                        except (ValueError, KeyError, TypeError):
                            failures.append(f"{spec.name} {kind.name}/{source.name}: exit 3 without an error record")
                    outcomes[spec.name][label] = outcomes[spec.name].get(label, 0) + 1
                    if code not in (0, 3):
                        failures.append(f"{spec.name} {kind.name}/{source.name}: exit {code}: {err.strip()[-300:]}")
                    if "Traceback" in err:
                        failures.append(f"{spec.name} {kind.name}/{source.name}: a traceback on stderr")
                finally:
                    shutil.rmtree(root, ignore_errors=True)
    if peak_rss_mb > HOSTILE_MAX_RSS_MB:
        failures.append(f"peak RSS of a run was {peak_rss_mb:.0f} MB, over the {HOSTILE_MAX_RSS_MB:.0f} MB limit")
    return {"inputs_tried": tried, "outcomes": outcomes, "slowest_s": round(slowest, 2),
            "peak_rss_mb": round(peak_rss_mb, 1), "failures": failures}


def s3_faults(trials: int) -> dict[str, Any]:
    """The storage-fault scenarios of tests/s3faults.py, ``trials`` times each."""
    sys.path.insert(0, str(REPO / "tests"))
    import s3faults
    from s3support import mounts, running_moto

    work = Path(tempfile.mkdtemp(prefix="mw-s3faults-"))
    results: dict[str, list[dict[str, Any]]] = {"server_stopped": [], "cache_disk_full": [], "write_eio": []}
    try:
        with running_moto(work) as server:
            for trial in range(trials):
                here = work / f"trial-{trial}"
                for part in ("a", "b", "c"):
                    (here / part).mkdir(parents=True)
                with mounts(server, here / "a") as make:
                    mount = make(cache_options=s3faults.FAST_FAIL_OPTIONS)
                    mount.put("ingest/", b"")
                    results["server_stopped"].append(s3faults.server_stopped(server, mount, trial))
                with mounts(server, here / "b") as make, \
                        s3faults.small_tmpfs(here / "cache", "8m") as cache:
                    results["cache_disk_full"].append(s3faults.cache_disk_full(make, cache, trial))
                with mounts(server, here / "c") as make:
                    results["write_eio"].append(s3faults.write_eio(make, server, trial))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary: dict[str, Any] = {}
    failures: list[str] = []
    for name, runs in results.items():
        codes = [r["exit_code"] for r in runs]
        summary[name] = {"trials": len(runs), "exit_codes": codes,
                         "messages": sorted({r["message"].split(": ", 2)[-1].split(" (")[0] for r in runs}),
                         "failures": [f for r in runs for f in r["failures"]]}
        if name == "server_stopped":
            summary[name]["slowest_give_up_s"] = max((r["ended_after_s"] for r in runs), default=0)
        failures += [f"{name}: {f}" for f in summary[name]["failures"]]
    summary["failures"] = failures
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=50, help="crash trials per worker (default 50)")
    parser.add_argument("--duplicates", type=int, default=8, help="concurrent deliveries per worker (default 8)")
    parser.add_argument("--worker", action="append", default=[], help="only these workers")
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus",
                        help="hostile inputs (default ../shared/corpus; skipped when absent)")
    parser.add_argument("--skip", action="append", default=[], choices=["crash", "duplicates", "hostile", "s3-faults"])
    parser.add_argument("--s3-trials", type=int, default=3, help="trials of each S3 storage fault (default 3)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="mw-samples-"))
    report: dict[str, Any] = {"seed": args.seed, "workers": {}}
    try:
        inputs = sample_inputs(scratch)
        for worker, sample in sorted(inputs.items()):
            if args.worker and worker not in args.worker:
                continue
            entry: dict[str, Any] = {"sample": sample.name}
            if "crash" not in args.skip:
                entry["crash"] = crash_trials(worker, sample, args.trials, rng)
            if "duplicates" not in args.skip:
                entry["duplicates"] = duplicates(worker, sample, args.duplicates)
            report["workers"][worker] = entry
        if "hostile" not in args.skip and args.corpus.is_dir():
            report["hostile"] = hostile(args.corpus)
        if "s3-faults" not in args.skip:
            report["s3_faults"] = s3_faults(args.s3_trials)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    failures = [f for w in report["workers"].values() for part in ("crash", "duplicates")
                for f in w.get(part, {}).get("failures", [])] + report.get("hostile", {}).get("failures", []) \
        + report.get("s3_faults", {}).get("failures", [])
    report["failures"] = failures
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
