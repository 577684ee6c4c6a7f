"""Typed reading of worker options from events (JSON values) and the CLI (strings).

Each worker declares an options dataclass and parses a raw mapping with these helpers;
an unknown key or a value out of range is a :class:`UsageError` naming the key and the
accepted values, never a crash deep inside a library.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from shared.errors import UnknownOption, UsageError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_cli_options(pairs: Iterable[str]) -> dict[str, str]:
    """``["sizes=320,1024", "fit=cover"]`` -> ``{"sizes": "320,1024", "fit": "cover"}``.

    A key given twice is a usage error: which of two values was meant is not ours to guess.
    """
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"option {pair!r} is not KEY=VALUE (or WORKER:KEY=VALUE)")
        scope, sep, name = key.strip().rpartition(":")
        key = f"{scope}{sep}{name.replace('-', '_')}"
        if key in options:
            raise UsageError(f"option {key} is given twice ({options[key]!r} and {value.strip()!r}): give it once")
        options[key] = value.strip()
    return options


def resolve_options(options: Mapping[str, Any], parsers: Mapping[str, Callable[[Mapping[str, Any]], object]],
                    worker_names: Callable[[], Collection[str]]) -> dict[str, Any]:
    """Check a mixed option set against the selected workers (``parsers``: name -> its
    ``parse_options``) before any input is touched; return it scoped (``worker:key``).

    A plain ``key`` goes to the selected workers whose options have it, ``worker:key`` to
    that worker only (it wins over a plain one). A usage error, before any work: a
    ``WORKER:`` prefix that names no selected worker, a key that no selected worker has,
    a value a worker refuses. (Otherwise every input would be refused one by one.)
    ``worker_names`` lists every worker, for that first message only: listing the installed
    ones scans every distribution.
    """
    plain = {k: v for k, v in options.items() if ":" not in k}
    for key in options.keys() - plain.keys():
        scope = key.rpartition(":")[0]
        if scope in parsers:
            continue
        all_workers = worker_names()
        if scope in all_workers:
            raise UsageError(f"option {key}: {scope} is not a selected worker (selected: {', '.join(parsers)})")
        import difflib  # only for this message: importing it costs every cold start ~1 ms

        close = difflib.get_close_matches(scope.replace("_", "-"), list(all_workers), n=1, cutoff=0.6)
        raise UsageError(f"option {key}: there is no worker named {scope!r}"
                         + (f"; did you mean {close[0]}?" if close else f" (workers: {', '.join(all_workers)})"))
    resolved: dict[str, Any] = {}
    claimed: set[str] = set()
    unknown: dict[str, UnknownOption] = {}
    for worker, parse in parsers.items():
        mine = options_for(worker, options)
        scoped = {k.partition(":")[2] for k in options if k.startswith(worker + ":")}
        try:
            _parse_as(worker, parse, mine)
        except UnknownOption as exc:
            if scoped & set(exc.keys):
                raise  # a worker:key this worker does not have
            unknown[worker] = exc
            mine = {k: v for k, v in mine.items() if k not in exc.keys}
            _parse_as(worker, parse, mine)  # the keys it has must still hold valid values
        claimed.update(plain.keys() & mine.keys())
        resolved.update({f"{worker}:{k}": v for k, v in mine.items()})
    unclaimed = sorted(plain.keys() - claimed)
    if unclaimed:
        if len(unknown) == 1:
            raise next(iter(unknown.values()))
        known = "".join(f"\n  {worker}: {', '.join(exc.known)}" for worker, exc in unknown.items())
        raise UsageError(f"option(s) {', '.join(unclaimed)}: no selected worker has them; known options:{known}")
    return resolved


def _parse_as(worker: str, parse: Callable[[Mapping[str, Any]], object], options: Mapping[str, Any]) -> None:
    """Parse one worker's options; a bad value's message names the worker it was for."""
    try:
        parse(options)
    except UnknownOption:
        raise
    except UsageError as exc:
        raise UsageError(exc.message if exc.message.startswith(worker) else f"{worker}: {exc.message}") from exc


def options_for(worker: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options one worker gets from a mixed set: ``key`` applies to every worker,
    ``worker:key`` only to that one (``-o pdf-extract:parallel=1`` in a backfill)."""
    mine: dict[str, Any] = {}
    for key, value in options.items():
        scope, sep, name = key.rpartition(":")
        if not sep:
            mine.setdefault(key, value)
        elif scope == worker:
            mine[name] = value
    return mine


class OptionReader:
    """Reads keys out of a raw option mapping, remembering which ones were used."""

    def __init__(self, raw: Mapping[str, Any] | None, worker: str) -> None:
        if raw is not None and not isinstance(raw, Mapping):
            raise UsageError(f"{worker} options must be an object of KEY: VALUE, got {type(raw).__name__}")
        self.raw = {str(k).replace("-", "_"): v for k, v in (raw or {}).items()}
        self.worker = worker
        self.used: set[str] = set()

    def _get(self, key: str) -> Any:
        self.used.add(key)
        return self.raw.get(key)

    def finish(self) -> None:
        """Refuse keys that no option claimed (a typo must not silently use a default)."""
        unknown = sorted(set(self.raw) - self.used)
        if unknown:
            raise UnknownOption(
                f"unknown {self.worker} option(s): {', '.join(unknown)}; known: {', '.join(sorted(self.used))}",
                unknown,
                sorted(self.used),
            )

    def integer(self, key: str, default: int, *, lo: int, hi: int) -> int:
        value = self._get(key)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            raise UsageError(f"option {key} must be an integer, got {value!r}")
        try:
            number = int(value) if not isinstance(value, float) or value.is_integer() else None
        except (TypeError, ValueError):
            number = None
        if number is None:
            raise UsageError(f"option {key} must be an integer, got {value!r}")
        if not lo <= number <= hi:
            raise UsageError(f"option {key}={number} is out of range {lo}..{hi}")
        return number

    def number(self, key: str, default: float, *, lo: float, hi: float) -> float:
        value = self._get(key)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            raise UsageError(f"option {key} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"option {key} must be a number, got {value!r}") from None
        if not lo <= number <= hi:
            raise UsageError(f"option {key}={number} is out of range {lo}..{hi}")
        return number

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise UsageError(f"option {key} must be true or false, got {value!r}")

    def choice(self, key: str, default: str, choices: Iterable[str]) -> str:
        allowed = list(choices)
        value = self._get(key)
        if value is None or value == "":
            return default
        text = str(value).strip().lower()
        if text not in allowed:
            raise UsageError(f"option {key}={value!r} is not one of {', '.join(allowed)}")
        return text

    def text(self, key: str, default: str, *, max_len: int = 256) -> str:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise UsageError(f"option {key} must be a string, got {type(value).__name__}")
        if len(value) > max_len:
            raise UsageError(f"option {key} is longer than {max_len} characters")
        return value

    def items(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """A list option: a JSON list or a comma-separated string."""
        value = self._get(key)
        if value is None or value == "" or value == []:
            return default
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",")]
        elif isinstance(value, list | tuple):
            parts = [str(p).strip() for p in value]
        else:
            raise UsageError(f"option {key} must be a list or a comma-separated string, got {value!r}")
        if not all(parts):
            raise UsageError(f"option {key} has an empty item: {value!r}")
        return tuple(parts)
