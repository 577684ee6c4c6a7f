"""The one error tree of mountworks, its stable error codes, and the exit codes.

    MountworksError                      base of everything we raise on purpose
    ├── PermanentInputError      exit 3  the input can never be processed as asked:
    │   │                                an ``error.json`` is committed, never retried
    │   ├── UnsupportedInput             not a format this worker takes
    │   ├── CorruptInput                 truncated, malformed, undecodable
    │   ├── EncryptedInput               needs a password or key we do not have
    │   ├── LimitExceeded                a named limit (pixels, pages, bytes, time) was hit
    │   ├── BadContract                  a schema contract beside the input cannot be used
    │   └── RangeOutputMismatch          a committed page-range run's output changed after its commit
    ├── RetryableError           exit 75 try again later; nothing was committed
    │   ├── InputNotVisible              the event came before the file showed on the mount
    │   ├── ClaimHeld                    a live holder is processing the same run
    │   ├── DeadlineReached              the invocation would be killed before finishing
    │   ├── EnvironmentFault             the disk or the mount failed (full, read-only, I/O,
    │   │                                stale, timed out): not the input's fault
    │   ├── InputChanged                 the input changed while it was processed
    │   └── RetryLater                   raised out of a Lambda handler so that Lambda retries
    ├── NotCommitted             exit 5  a reader asked for a result nothing committed lists
    │                                    (never processed, the input changed, an unlisted output)
    ├── OutputMismatch           exit 4  a listed output does not hold its manifest's size and sha256
    ├── RefusedPath              exit 2  an untrusted key or path that we will not touch
    │                                    (escape attempt, NUL byte, too long); never retried
    └── UsageError               exit 2  a bad command line or option value
        └── UnknownOption                an option key the worker does not have (routing
                                         drops it for that worker; no worker at all: usage)

Anything else that escapes a worker is a bug: exit 1, and Lambda sees the exception.
Third-party errors are translated into this tree at one boundary per worker
(``workers/<name>/core.py``), always chained with ``raise ... from exc``.

The codes below are what ``error.json`` and every outcome carry as ``code``: stable,
machine-readable, named once here. A class carries its default code; a raise may name
a more precise one of the same family (``CorruptInput(..., code=EMPTY_INPUT)``).
"""

from __future__ import annotations

import errno
import os

EXIT_DONE = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_PERMANENT = 3
EXIT_VERIFY_FAILED = 4
EXIT_NOT_COMMITTED = 5  # show: nothing is committed for this content (yet)
EXIT_RETRYABLE = 75

# ------------------------------------------------------------------ error codes
# permanent: committed as error.json
INVALID_INPUT = "invalid-input"
UNSUPPORTED_FORMAT = "unsupported-format"
UNSUPPORTED_CODEC = "unsupported-codec"  # a format we take, in a codec (or codec feature) our decoder lacks
CORRUPT_INPUT = "corrupt-input"
EMPTY_INPUT = "empty-input"
BINARY_INPUT = "binary-input"
BAD_ENCODING = "bad-encoding"
ENCRYPTED = "encrypted-input"
PASSWORD_REQUIRED = "password-required"
WRONG_PASSWORD = "wrong-password"
LIMIT_EXCEEDED = "limit-exceeded"
DECODER_CRASH = "decoder-crash"  # the worker's process died in native code on this input
BAD_CONTRACT = "bad-contract"
CONTRACT_VIOLATION = "contract-violation"
MISSING_COLUMN = "missing-column"
PAGE_RANGE_OUT_OF_BOUNDS = "page-range-out-of-bounds"
PAGE_RANGES_MISMATCH = "page-ranges-mismatch"
RANGE_OUTPUT_MISMATCH = "range-output-mismatch"
RANGE_FAILED = "range-failed"
PAGE_ERROR = "page-error"  # one page of a PDF could not be read (recorded on the page, not the run)
# retryable: nothing committed
RETRYABLE = "retryable"
INPUT_NOT_VISIBLE = "input-not-visible"
IN_PROGRESS = "in-progress"
DEADLINE = "deadline"
RANGES_PENDING = "ranges-pending"
ENVIRONMENT_FAULT = "environment-fault"  # the disk or the mount failed, not the input
INPUT_CHANGED = "input-changed"  # the input was rewritten while it was processed
WORKER_KILLED = "worker-killed"  # killed from outside (OOM killer, operator): not the input's fault
# readers (show, shared.reader)
NOT_COMMITTED = "not-committed"
OUTPUT_MISMATCH = "output-mismatch"
# refused, usage, bugs
REFUSED_PATH = "refused-path"
USAGE = "usage"
INTERNAL = "internal"
ERROR = "error"


class MountworksError(Exception):
    """Base class; ``code`` is the stable, machine-readable name used in error.json."""

    code = ERROR
    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class PermanentInputError(MountworksError):
    """The input cannot be processed with these options, now or ever."""

    code = INVALID_INPUT
    exit_code = EXIT_PERMANENT


class UnsupportedInput(PermanentInputError):
    code = UNSUPPORTED_FORMAT


class CorruptInput(PermanentInputError):
    code = CORRUPT_INPUT


class EncryptedInput(PermanentInputError):
    code = ENCRYPTED


class LimitExceeded(PermanentInputError):
    """A named limit was reached; ``limit`` names it so that operators can raise it."""

    code = LIMIT_EXCEEDED

    def __init__(self, message: str, *, limit: str, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.limit = limit


class BadContract(PermanentInputError):
    """The schema contract cannot be used; the input can never pass it as written."""

    code = BAD_CONTRACT


class RangeOutputMismatch(PermanentInputError):
    """A page-range run's listed output does not hold its manifest's bytes (changed after commit)."""

    code = RANGE_OUTPUT_MISMATCH


class RetryableError(MountworksError):
    """Nothing is wrong with the input; the same request may succeed later."""

    code = RETRYABLE
    exit_code = EXIT_RETRYABLE


class InputNotVisible(RetryableError):
    code = INPUT_NOT_VISIBLE


class ClaimHeld(RetryableError):
    code = IN_PROGRESS


class DeadlineReached(RetryableError):
    code = DEADLINE


class EnvironmentFault(RetryableError):
    """The machine or the mount failed under us; the input may be fine, so nothing is recorded."""

    code = ENVIRONMENT_FAULT


class InputChanged(RetryableError):
    """The input's size or mtime moved between its identification and the commit: what was
    processed is not the content the run-id names, so neither record may be committed."""

    code = INPUT_CHANGED


class RetryLater(RetryableError):
    """Raised out of a handler so that Lambda (or the caller) retries the event."""


class NotCommitted(MountworksError):
    """A reader found no commit for what it asked: never processed, changed since, or not listed."""

    code = NOT_COMMITTED
    exit_code = EXIT_NOT_COMMITTED


class OutputMismatch(MountworksError):
    """A listed output's bytes are not what its manifest recorded (changed, or not exported whole yet)."""

    code = OUTPUT_MISMATCH
    exit_code = EXIT_VERIFY_FAILED


class RefusedPath(MountworksError):
    """An untrusted path that is refused before anything is opened."""

    code = REFUSED_PATH
    exit_code = EXIT_USAGE


class UsageError(MountworksError):
    code = USAGE
    exit_code = EXIT_USAGE


class UnknownOption(UsageError):
    """Keys a worker's options do not have: a backfill gives a plain ``-o KEY=VALUE`` only to
    the workers that know it, so it must tell "not mine" from "a bad value"."""

    def __init__(self, message: str, keys: list[str], known: list[str]) -> None:
        super().__init__(message)
        self.keys = keys
        self.known = known


def error_body(exc: MountworksError) -> dict[str, str]:
    """The ``error`` object of an error record: ``{code, message}`` and the limit's name."""
    body = {"code": exc.code, "message": exc.message}
    if isinstance(exc, LimitExceeded):
        body["limit"] = exc.limit
    return body


def retryable_error_names() -> frozenset[str]:
    """The class names of the retryable branch (how a Lambda function error is told apart)."""
    found, todo = set(), [RetryableError]
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(found)


def exit_code_for(exc: BaseException) -> int:
    """The contract's exit code for any exception (a non-mountworks one is a bug)."""
    return exc.exit_code if isinstance(exc, MountworksError) else EXIT_INTERNAL


# --------------------------------------------------- the environment's faults, not the input's

# errno -> what it means to an operator. These come from the disk, the mount or the network
# under it, never from an input's bytes, so they are retryable wherever they surface.
ENVIRONMENT_ERRNOS: dict[int, str] = {
    errno.ENOSPC: "the file system is full",
    errno.EDQUOT: "a disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "an I/O error on the mount",
    errno.ESTALE: "a stale file handle (the mount's server lost the file's handle)",
    errno.ETIMEDOUT: "the mount's server timed out",
    errno.ENOTCONN: "the mount is disconnected",
    errno.ECONNABORTED: "the mount's connection was aborted",
    errno.EHOSTDOWN: "the mount's server is down",
}
# the same faults as tools print them (ffmpeg, pyarrow): "No space left on device", ...
_ENVIRONMENT_TEXTS = {os.strerror(number).lower(): number for number in ENVIRONMENT_ERRNOS}


def environment_fault(exc: BaseException | None, *, doing: str = "") -> EnvironmentFault | None:
    """The retryable error for an exception the environment caused, else None.

    The one place that decides "this OSError is the disk's or the mount's, not the input's".
    Looks through the ``raise ... from`` chain, so an OSError wrapped by a worker's
    translation boundary is still recognised. Only OSErrors count: their errno, or, when a
    library dropped it (pyarrow), their message. Another exception's message may quote the
    input's own bytes (a CSV row), so it is never read for these words.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError):
            if exc.errno in ENVIRONMENT_ERRNOS:
                return _fault(exc.errno, str(exc), doing)
            if exc.errno is None:
                lowered = str(exc).lower()
                for phrase, number in _ENVIRONMENT_TEXTS.items():
                    if phrase in lowered:
                        return _fault(number, str(exc), doing)
        exc = exc.__cause__ or exc.__context__
    return None


def environment_fault_in_text(lines: list[str], doing: str = "") -> EnvironmentFault | None:
    """The retryable error for a tool's error lines (ffmpeg's stderr) that report an
    environment fault, as ``<what>: No space left on device``. A metadata line of the input
    (``title      : No space left on device``) has a space before its colon and never counts."""
    for line in lines:
        lowered = line.lower().rstrip()
        for phrase, number in _ENVIRONMENT_TEXTS.items():
            at = lowered.find(": " + phrase)
            if at > 0 and not lowered[at - 1].isspace():
                return _fault(number, line.strip(), doing)
    return None


LOW_SPACE_BYTES = 1 << 20  # a file system with less free than this is full, for a tool that wrote no error


def out_of_space(folder: str | os.PathLike[str], doing: str = "") -> EnvironmentFault | None:
    """ENOSPC as a retryable error when ``folder``'s file system is (nearly) full, else None.

    For a tool that ends "successfully" having written a short or empty output on a full
    disk (ffmpeg with ``+faststart`` exits 0 so): asked before calling such an output the
    input's fault.
    """
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    if free >= LOW_SPACE_BYTES and st.f_favail != 0:
        return None
    return _fault(errno.ENOSPC, f"{free:,} bytes free on the output's file system", doing)


def _fault(number: int, text: str, doing: str) -> EnvironmentFault:
    where = f" while {doing}" if doing else ""
    detail = text if len(text) <= 300 else text[:300] + "..."
    return EnvironmentFault(f"{ENVIRONMENT_ERRNOS[number]}{where} ({errno.errorcode[number]}: {detail}); "
                            "nothing was committed: fix the storage, then retry")
