"""The one error tree of mountworks; exit codes and Lambda outcomes derive from it.

    MountworksError                      base of everything we raise on purpose
    ├── PermanentInputError      exit 3  the input can never be processed as asked:
    │   │                                an ``error.json`` is committed, never retried
    │   ├── UnsupportedInput             not a format this worker takes
    │   ├── CorruptInput                 truncated, malformed, undecodable
    │   ├── EncryptedInput               needs a password or key we do not have
    │   └── LimitExceeded                a named limit (pixels, pages, bytes, time) was hit
    ├── RetryableError           exit 75 try again later; nothing was committed
    │   ├── InputNotVisible              the event came before the file showed on the mount
    │   ├── ClaimHeld                    a live holder is processing the same run
    │   └── DeadlineReached              the invocation would be killed before finishing
    ├── RefusedPath              exit 2  an untrusted key or path that we will not touch
    │                                    (escape attempt, NUL byte, too long); never retried
    └── UsageError               exit 2  a bad command line or option value

Anything else that escapes a worker is a bug: exit 1, and Lambda sees the exception.
Third-party errors are translated into this tree at one boundary per worker
(``workers/<name>/core.py``), always chained with ``raise ... from exc``.
"""

from __future__ import annotations

EXIT_DONE = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_PERMANENT = 3
EXIT_VERIFY_FAILED = 4
EXIT_RETRYABLE = 75


class MountworksError(Exception):
    """Base class; ``code`` is the stable, machine-readable name used in error.json."""

    code = "error"
    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class PermanentInputError(MountworksError):
    """The input cannot be processed with these options, now or ever."""

    code = "invalid-input"
    exit_code = EXIT_PERMANENT


class UnsupportedInput(PermanentInputError):
    code = "unsupported-format"


class CorruptInput(PermanentInputError):
    code = "corrupt-input"


class EncryptedInput(PermanentInputError):
    code = "encrypted-input"


class LimitExceeded(PermanentInputError):
    """A named limit was reached; ``limit`` names it so that operators can raise it."""

    code = "limit-exceeded"

    def __init__(self, message: str, *, limit: str, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.limit = limit


class RetryableError(MountworksError):
    """Nothing is wrong with the input; the same request may succeed later."""

    code = "retryable"
    exit_code = EXIT_RETRYABLE


class InputNotVisible(RetryableError):
    code = "input-not-visible"


class ClaimHeld(RetryableError):
    code = "in-progress"


class DeadlineReached(RetryableError):
    code = "deadline"


class RefusedPath(MountworksError):
    """An untrusted path that is refused before anything is opened."""

    code = "refused-path"
    exit_code = EXIT_USAGE


class UsageError(MountworksError):
    code = "usage"
    exit_code = EXIT_USAGE


def exit_code_for(exc: BaseException) -> int:
    """The contract's exit code for any exception (a non-mountworks one is a bug)."""
    return exc.exit_code if isinstance(exc, MountworksError) else EXIT_INTERNAL
