"""What a worker is, as the runtime sees it.

A worker says what it accepts (``sniff`` on the first bytes, extensions as a hint),
which options it has, and how it turns one input file into outputs in the run directory
it is handed. Everything about where, when, whether and how safely is the runtime's.
The heavy library (Pillow, pypdf, ffmpeg, pyarrow) lives only in the worker's
``core`` module, imported the first time an input is processed.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from shared.errors import DeadlineReached
from shared.paths import InputRef
from shared.runs import OutputDir, Run

SNIFF_BYTES = 64
MAX_SNIFF_BYTES = 8192  # a routing read stays one small read per file

OptionsT_contra = TypeVar("OptionsT_contra", contravariant=True)

if TYPE_CHECKING:  # the shapes a worker plugs in; for the type checker only (no import-time cost)

    class WorkerOptions(Protocol):
        def to_manifest(self) -> dict[str, Any]:
            """The normalized options, as recorded in the manifest and hashed into the run-id."""
            ...

    class WorkerCore(Protocol[OptionsT_contra]):
        """What a worker's ``core`` module is. Each worker package checks its own against it::

            if TYPE_CHECKING:
                from mypackage import core   # the worker package's own core module
                _core: WorkerCore[Options] = core   # mypy: a misspelt or mistyped process fails here
        """

        def process(
            self, source: InputFile, out: OutputDir, options: OptionsT_contra, ctx: RunContext
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
    run: Run | None = None  # this run: a merge finds the committed runs of the same input through it


class WorkerSpec(NamedTuple):
    """A worker's registration: cheap to import, names its heavy core by module."""

    name: str
    version: str
    extensions: frozenset[str]
    sniff: Callable[[bytes], bool]
    parse_options: Callable[[Mapping[str, Any] | None], WorkerOptions]
    core_module: str
    companions: tuple[str, ...] = ()  # name endings of files that configure inputs (never inputs)
    sniff_bytes: int = SNIFF_BYTES  # how much of the head ``sniff`` sees: more only where a format needs it

    def is_companion(self, name: str) -> bool:
        return name.lower().endswith(self.companions) if self.companions else False

    def core(self) -> WorkerCore[Any]:
        module: Any = importlib.import_module(self.core_module)
        return module  # type: ignore[no-any-return]

    def accepts(self, head: bytes) -> bool:
        return self.sniff(head[:self.sniff_bytes])

    def hinted_by(self, name: str) -> bool:
        suffixes = [s.lower() for s in Path(name).suffixes[-2:]]
        return any(s in self.extensions for s in suffixes) or "".join(suffixes) in self.extensions


PROCESS_PARAMETERS = ("source", "out", "options", "ctx")


# A worker's name: lowercase words joined by '-'. It names a workspace folder, a CLI argument,
# a metric dimension and (CamelCased) the template's resources, so one rule serves them all.
WORKER_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


def is_worker_name(name: object) -> bool:
    return isinstance(name, str) and WORKER_NAME.fullmatch(name) is not None


def spec_problems(spec: WorkerSpec) -> list[str]:
    """What makes a registration unusable, found without importing its core (cheap)."""
    problems = []
    if not is_worker_name(spec.name):
        problems.append(f"name {spec.name!r} must be lowercase words joined by '-' (a plain folder name such as "
                        "'image-resize')")
    if not isinstance(spec.version, str) or not spec.version:
        problems.append("version must be a non-empty string (it is part of every run-id)")
    bad = sorted(e for e in spec.extensions if not (isinstance(e, str) and e.startswith(".") and e == e.lower()))
    if bad:
        problems.append(f"extensions must be lower-case suffixes such as '.txt' (got {', '.join(map(repr, bad))})")
    for field in ("sniff", "parse_options"):
        if not callable(getattr(spec, field)):
            problems.append(f"{field} must be callable")
    if not isinstance(spec.sniff_bytes, int) or not SNIFF_BYTES <= spec.sniff_bytes <= MAX_SNIFF_BYTES:
        problems.append(f"sniff_bytes must be an integer from {SNIFF_BYTES} to {MAX_SNIFF_BYTES}")
    if not isinstance(spec.core_module, str) or not spec.core_module:
        problems.append("core_module must name the module that defines process()")
    return problems


def core_problems(spec: WorkerSpec) -> list[str]:
    """What makes a worker's core unusable: ``process`` missing, or with other parameters.

    The type checker finds these in a worker's own package (see :class:`WorkerCore`); this
    is the same check at run time, for a registry test over every worker, installed ones too.
    """
    import inspect

    try:
        process = getattr(spec.core(), "process", None)
    except ImportError as exc:
        return [f"core module {spec.core_module} cannot be imported: {exc}"]
    if not callable(process):
        return [f"core module {spec.core_module} has no process() function"]
    names = tuple(inspect.signature(process).parameters)
    if names != PROCESS_PARAMETERS:
        return [f"{spec.core_module}.process{names} must take {PROCESS_PARAMETERS}"]
    return []
