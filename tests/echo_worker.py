"""A tiny worker used only by the core tests, so that the runtime's promises (claims,
commits, crashes, duplicates, deadlines) are tested apart from any media library.

It accepts files that start with ``ECHO``; options make it slow, fail for good (before or
after writing its first output), die, or read its input only after ``sleep`` seconds
(``read-late``: time for a test to rewrite the input between its hashing and its reading).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import CorruptInput
from shared.options import OptionReader
from shared.runs import OutputDir
from shared.worker import InputFile, RunContext, WorkerSpec


@dataclass(frozen=True)
class EchoOptions:
    sleep: float
    mode: str

    def to_manifest(self) -> dict[str, Any]:
        return {"mode": self.mode}  # sleep only paces the test; it is not part of the result


def parse(raw: Mapping[str, Any] | None) -> EchoOptions:
    reader = OptionReader(raw, "test-echo")
    options = EchoOptions(sleep=reader.number("sleep", 0.0, lo=0, hi=60),
                          mode=reader.choice("mode", "ok", ["ok", "fail", "fail-late", "abort", "slow-write",
                                                                  "read-late"]))
    reader.finish()
    return options


def process(source: InputFile, out: OutputDir, options: EchoOptions, ctx: RunContext) -> dict[str, Any]:
    if options.mode == "read-late":
        time.sleep(options.sleep)
    data = source.path.read_bytes()
    if options.mode == "abort":
        os.abort()
    if options.mode == "fail" or data.startswith(b"ECHO-BAD"):
        raise CorruptInput("this echo input is marked bad")
    with out.open("copy.bin", "application/octet-stream") as f:
        f.write(data)
        f.flush()
        time.sleep(options.sleep)
    if options.mode == "fail-late":
        raise CorruptInput("this echo input failed after its first output")
    ctx.deadline.check(doing="echoing")
    out.write_bytes("upper.txt", data.upper(), "text/plain", length=len(data))
    time.sleep(options.sleep)
    return {"length": len(data)}


SPEC = WorkerSpec(
    name="test-echo",
    version="1",
    extensions=frozenset({".echo"}),
    sniff=lambda head: head.startswith(b"ECHO"),
    parse_options=parse,
    core_module="echo_worker",
)
