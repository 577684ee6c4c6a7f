"""Seeded damage of a file, as a bucket of millions holds it: cut short, bytes overwritten,
regions repeated or swapped. The same seed gives the same damage on every run, so a failing
test names a file that fails again.

The first ``keep`` bytes (the magic that routes a file to its worker) are left alone by the
overwriting kinds, so that most damaged files still reach the worker they were made for."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Cli

Damage = Callable[[bytes, random.Random], bytes]


def cut(fraction: float) -> Damage:
    return lambda data, _rng: data[:max(1, int(len(data) * fraction))]


def overwritten(count: int, keep: int = 64) -> Damage:
    def damage(data: bytes, rng: random.Random) -> bytes:
        damaged = bytearray(data)
        low = min(keep, len(data) - 1)
        for _ in range(count):
            damaged[rng.randrange(low, len(data))] = rng.randrange(256)
        return bytes(damaged)

    return damage


def repeated(times: int, most: int = 4000) -> Damage:
    """A region of up to ``most`` bytes written ``times`` times over (a retried upload's chunk)."""
    def damage(data: bytes, rng: random.Random) -> bytes:
        at = rng.randrange(len(data))
        region = data[at:at + rng.randrange(1, most)]
        return data[:at] + region * times + data[at:]

    return damage


def swapped(keep: int = 64) -> Damage:
    def damage(data: bytes, rng: random.Random) -> bytes:
        start, end = sorted(rng.randrange(min(keep, len(data) - 1), len(data)) for _ in range(2))
        return data[:start] + data[end:] + data[start:end]

    return damage


def zeroed(data: bytes, _rng: random.Random) -> bytes:
    third = len(data) // 3
    return data[:third] + bytes(third) + data[2 * third:]


KINDS: dict[str, Damage] = {
    "cut-at-10pc": cut(0.1),
    "cut-at-half": cut(0.5),
    "cut-at-90pc": cut(0.9),
    "last-byte-gone": cut(0.999),
    "one-byte-overwritten": overwritten(1),
    "four-bytes-overwritten": overwritten(4),
    "64-bytes-overwritten": overwritten(64),
    "region-twice": repeated(2),
    "region-twenty-times": repeated(20),
    "regions-swapped": swapped(),
    "middle-zeroed": zeroed,
}


def backfill_all_classified(cli: Cli, mount: Path, worker: str, count: int, *options: str) -> dict[str, Any]:
    """One backfill of ``worker`` over the mount's ``count`` inputs: each ended committed (done,
    or failed for good) or was not routed to the worker; never internal, retryable or refused.
    Returns the summary."""
    code, summary = cli("backfill", "--root", str(mount), "--worker", worker, "--jobs", "2", "--no-progress",
                        *options)
    totals = summary["totals"]
    assert code == 0, (cli.err, totals)
    assert totals["internal_error"] == totals["retryable"] == totals["refused"] == 0, (totals, summary["failures"])
    assert totals["done"] + totals["failed"] + summary["unrouted"] == count, totals
    return summary


def damaged(stem: str, suffix: str, data: bytes, kinds: dict[str, Damage] = KINDS) -> dict[str, bytes]:
    """``{"<stem>--<kind><suffix>": damaged bytes}``, each kind seeded by the stem and its name."""
    return {f"{stem}--{name}{suffix}": damage(data, random.Random(f"{stem}--{name}"))
            for name, damage in kinds.items()}
