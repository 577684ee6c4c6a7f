"""A small side-by-side benchmark harness: contenders run interleaved in one process run.

Why interleaved: the machine is shared and noisy; running A,B,C,A,B,C... (rotating who
goes first) spreads drift evenly over every contender, so ratios stay honest even when
absolute times wander. Medians, not means, because one stall should not move the result.

    from bench.harness import Contender, compare
    results = compare([Contender("ours", run_ours), Contender("naive", run_naive)],
                      anchor="naive", repeats=5)
    print(results.markdown())

A contender is a callable (timed in this process) or a command (an argv list, timed as
a subprocess, start-up included). ``setup`` runs before every repeat, untimed.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.config import MountConfig
    from shared.paths import InputRef


@dataclass
class Contender:
    name: str
    run: Callable[[], object] | Sequence[str]
    setup: Callable[[], object] | None = None
    note: str = ""
    env: dict[str, str] | None = None  # extra environment for a command

    def once(self) -> float:
        if self.setup is not None:
            self.setup()
        if callable(self.run):
            started = time.perf_counter()
            self.run()
            return time.perf_counter() - started
        env = {**os.environ, **(self.env or {})}
        started = time.perf_counter()
        subprocess.run(list(self.run), check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - started


@dataclass
class Timing:
    name: str
    seconds: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)


@dataclass
class Results:
    timings: list[Timing]
    anchor: str
    units: float = 1.0  # work items per run (files, rows...), for a throughput column
    unit_name: str = ""

    def __getitem__(self, name: str) -> Timing:
        return next(t for t in self.timings if t.name == name)

    def ratio(self, name: str, anchor: str | None = None) -> float:
        """Median wall time of ``name`` divided by the anchor's (below 1 is faster)."""
        return self[name].median / self[anchor or self.anchor].median

    def paired(self, name: str, anchor: str | None = None) -> float:
        """Median over rounds of ``name / anchor`` within the same round.

        Runs of one round are neighbours in time, so a load spike from other processes hits
        both; this is steadier than a ratio of medians when the machine is shared.
        """
        a, b = self[name].seconds, self[anchor or self.anchor].seconds
        return statistics.median(x / y for x, y in zip(a, b, strict=True))

    def markdown(self) -> str:
        base = self[self.anchor].median
        head = ("| contender | median s | best s | time vs " + self.anchor + " | throughput vs " + self.anchor
                + " | paired time vs " + self.anchor + " |")
        lines = [head, "|---|---:|---:|---:|---:|---:|"]
        if self.unit_name:
            lines[0] = lines[0][:-1] + f"| {self.unit_name}/s |"
            lines[1] += "---:|"
        for t in self.timings:
            row = (f"| {t.name}{' (' + t.note + ')' if t.note else ''} | {t.median:.3f} | {t.best:.3f} | "
                   f"{t.median / base:.2f}x | {base / t.median:.2f}x | {self.paired(t.name):.2f}x |")
            if self.unit_name:
                row += f" {self.units / t.median:.2f} |"
            lines.append(row)
        return "\n".join(lines)


def compare(contenders: Sequence[Contender], *, anchor: str, repeats: int = 5, warmup: int = 1,
            units: float = 1.0, unit_name: str = "", progress: bool = True) -> Results:
    """Run every contender ``warmup + repeats`` times, interleaved and rotating the order."""
    timings = {c.name: Timing(c.name, note=c.note) for c in contenders}
    if anchor not in timings:
        raise ValueError(f"anchor {anchor!r} is not a contender")
    order = list(contenders)
    for round_no in range(warmup + repeats):
        for contender in order:
            seconds = contender.once()
            if round_no >= warmup:
                timings[contender.name].seconds.append(seconds)
            if progress:
                tag = "warmup" if round_no < warmup else f"round {round_no - warmup + 1}/{repeats}"
                print(f"  {tag}: {contender.name} {seconds:.3f}s", file=sys.stderr, flush=True)
        order = order[1:] + order[:1]
    return Results([timings[c.name] for c in contenders], anchor, units, unit_name)


def machine() -> str:
    """One line describing where the numbers came from."""
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def mount_with(work: Path, source: Path, name: str) -> tuple[Path, MountConfig, InputRef]:
    """A mount under ``work`` holding ``source`` as ``ingest/<name>``: where a bench runs the
    worker (through ``shared.runtime.execute``), with its config and the input's ref."""
    from shared.config import MountConfig
    from shared.paths import input_from_path

    mount = work / "mount"
    (mount / "ingest").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, mount / "ingest" / name)
    cfg = MountConfig.load(mount)
    ref = input_from_path(cfg, f"ingest/{name}")
    assert ref is not None
    return mount, cfg, ref
