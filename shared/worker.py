"""What a worker is, as the runtime sees it.

A worker says what it accepts (``sniff`` on the first bytes, extensions as a hint),
which options it has, and how it turns one input file into outputs in the run directory
it is handed. Everything about where, when, whether and how safely is the runtime's.
The heavy library (Pillow, pypdf, ffmpeg, pyarrow) lives only in the worker's
``core`` module, imported the first time an input is processed.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple, Protocol

from shared.errors import DeadlineReached
from shared.paths import InputRef
from shared.runs import OutputDir, RunLayout

SNIFF_BYTES = 64

if TYPE_CHECKING:  # the shapes a worker plugs in; for the type checker only (no import-time cost)

    class WorkerOptions(Protocol):
        def to_manifest(self) -> dict[str, Any]:
            """The normalized options, as recorded in the manifest and hashed into the run-id."""
            ...

    class WorkerCore(Protocol):
        def process(
            self, source: InputFile, out: OutputDir, options: Any, ctx: RunContext
        ) -> dict[str, Any]:
            """Write outputs into ``out``; return facts about the input for the manifest."""
            ...


class InputFile(NamedTuple):
    """The input, opened read-only (workers never write under ``ingest/``)."""

    ref: InputRef
    path: Path
    size: int
    sha256: str

    def open(self) -> IO[bytes]:
        return self.path.open("rb")


class Deadline:
    """The invocation's time budget; ``None`` means no limit (local runs)."""

    def __init__(self, seconds: float | None) -> None:
        self.ends_at = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        return None if self.ends_at is None else self.ends_at - time.monotonic()

    def check(self, margin: float = 0.0, *, doing: str = "processing") -> None:
        """Raise DeadlineReached when less than ``margin`` seconds are left."""
        left = self.remaining()
        if left is not None and left < margin:
            raise DeadlineReached(f"stopped {doing}: the invocation's time is nearly up ({left:.1f}s left)")


class RunContext(NamedTuple):
    """What a worker core may use besides its input, outputs and options."""

    deadline: Deadline
    run_id: str
    request_id: str
    layout: RunLayout | None = None  # this input's runs of this worker (a merge reads committed ones)


class WorkerSpec(NamedTuple):
    """A worker's registration: cheap to import, names its heavy core by module."""

    name: str
    version: str
    extensions: frozenset[str]
    sniff: Callable[[bytes], bool]
    parse_options: Callable[[Mapping[str, Any] | None], WorkerOptions]
    core_module: str
    companions: tuple[str, ...] = ()  # name endings of files that configure inputs (never inputs)

    def is_companion(self, name: str) -> bool:
        return name.lower().endswith(self.companions) if self.companions else False

    def core(self) -> WorkerCore:
        module: Any = importlib.import_module(self.core_module)
        return module  # type: ignore[no-any-return]

    def accepts(self, head: bytes) -> bool:
        return self.sniff(head[:SNIFF_BYTES])

    def hinted_by(self, name: str) -> bool:
        suffixes = [s.lower() for s in Path(name).suffixes[-2:]]
        return any(s in self.extensions for s in suffixes) or "".join(suffixes) in self.extensions
