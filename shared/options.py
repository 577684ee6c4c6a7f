"""Typed reading of worker options from events (JSON values) and the CLI (strings).

Each worker declares an options dataclass and parses a raw mapping with these helpers;
an unknown key or a value out of range is a :class:`UsageError` naming the key and the
accepted values, never a crash deep inside a library.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shared.errors import UsageError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_cli_options(pairs: Iterable[str]) -> dict[str, str]:
    """``["sizes=320,1024", "fit=cover"]`` -> ``{"sizes": "320,1024", "fit": "cover"}``."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"option {pair!r} is not KEY=VALUE")
        scope, sep, name = key.strip().rpartition(":")
        options[f"{scope}{sep}{name.replace('-', '_')}"] = value.strip()
    return options


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
            raise UsageError(
                f"unknown {self.worker} option(s): {', '.join(unknown)}; known: {', '.join(sorted(self.used))}"
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
