"""A/B: one benchmark run alternately from two checkouts, medians and ratios side by side.

    git worktree add /tmp/mw-before <commit>
    python bench/ab.py --before /tmp/mw-before --rounds 3 -- bench/bench_backfill.py --files 20000

Each round runs the benchmark script once from the ``--before`` checkout and once from this
one (the order alternates by round, so drift on a shared machine falls on both), each with
its own checkout first on ``sys.path``. The script must print one JSON object on stdout;
every numeric field (nested ones too, as ``a.b``) is reported as before / after medians and
their ratio (after / before: below 1 is faster where the field is a time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _numbers(value: Any, prefix: str = "") -> dict[str, float]:
    if isinstance(value, bool):
        return {}
    if isinstance(value, int | float):
        return {prefix: float(value)}
    if isinstance(value, dict):
        out: dict[str, float] = {}
        for key, inner in value.items():
            out.update(_numbers(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {}


def run_once(checkout: Path, script: str, args: list[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": f"{checkout}{os.pathsep}{checkout / 'tests'}"}
    done = subprocess.run([sys.executable, str(checkout / script), *args], cwd=checkout, env=env,
                          capture_output=True, text=True, check=True)
    start = done.stdout.index("{")
    return _numbers(json.loads(done.stdout[start:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, type=Path, help="the other checkout (a git worktree)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("script", help="the benchmark script, relative to each checkout")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args()
    args = [a for a in ns.args if a != "--"]
    samples: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    for round_ in range(ns.rounds):
        order = [("before", ns.before), ("after", REPO)]
        for label, checkout in order if round_ % 2 == 0 else order[::-1]:
            for key, value in run_once(checkout, ns.script, args).items():
                samples[label].setdefault(key, []).append(value)
            sys.stderr.write(f"round {round_ + 1}: {label} done\n")
    table = {}
    for key in samples["after"]:
        if key not in samples["before"]:
            continue
        before, after = statistics.median(samples["before"][key]), statistics.median(samples["after"][key])
        table[key] = {"before": before, "after": after, "ratio": round(after / before, 3) if before else None}
    print(json.dumps({"rounds": ns.rounds, "script": ns.script, "args": args, "fields": table}, indent=2))


if __name__ == "__main__":
    main()
