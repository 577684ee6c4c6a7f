"""Logs and metrics: a Powertools Logger (JSON on stderr) and EMF metrics per worker.

Powertools is loaded only when it is needed: by a Lambda handler when it is made, and
elsewhere at the first line that passes the level. Importing it costs ~25 ms, a sixth of a
one-page PDF's whole ``mountworks run``; at the command line's WARNING a run that goes well
logs nothing, so it never pays that.

Metrics are only emitted inside a Lambda invocation (the handler flushes them); the CLI
records none, since EMF lines on stdout would corrupt its JSON output.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from shared.config import log_level, metrics_namespace, service_name
from shared.outcomes import Outcome, Status

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger, Metrics

SERVICE = "mountworks"
NAMESPACE = metrics_namespace(SERVICE)
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}  # logging's numbers
_CALLER = 4  # stacklevel that makes a line's "location" its caller's: our two frames, then Powertools'


def _powertools_logger(level: int) -> Logger:
    import logging

    from aws_lambda_powertools import Logger

    class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
        """Writes to the current ``sys.stderr`` (CLI redirections and test capture included)."""

        def emit(self, record: logging.LogRecord) -> None:
            self.stream = sys.stderr
            super().emit(record)

    return Logger(service=service_name(SERVICE), level=level, logger_handler=StderrHandler())


class RunLogger:
    """The one logger of a process: Powertools' Logger, made at the first line that passes
    the level (or by :func:`lambda_logger`). Until then it keeps the level and the keys."""

    def __init__(self) -> None:
        self._real: Logger | None = None
        self._level = LEVELS.get(log_level("INFO").upper(), 20)
        self._keys: dict[str, Any] = {}

    @property
    def log_level(self) -> int:
        return self._real.log_level if self._real is not None else self._level

    def setLevel(self, level: str | int) -> None:  # the name of logging's and Powertools' method
        self._level = level if isinstance(level, int) else LEVELS[level.upper()]
        if self._real is not None:
            self._real.setLevel(self._level)

    def append_keys(self, **fields: Any) -> None:
        self._keys.update(fields)
        if self._real is not None:
            self._real.append_keys(**fields)

    def remove_keys(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for key in keys:
            self._keys.pop(key, None)
        if self._real is not None:
            self._real.remove_keys(keys)

    def real(self) -> Logger:
        if self._real is None:
            self._real = _powertools_logger(self._level)
            self._real.append_keys(**self._keys)
        return self._real

    def _log(self, level: int, method: str, message: str, extra: dict[str, Any] | None) -> None:
        if level >= self.log_level:
            getattr(self.real(), method)(message, extra=extra, stacklevel=_CALLER)

    def debug(self, message: str, extra: dict[str, Any] | None = None) -> None:
        self._log(10, "debug", message, extra)

    def info(self, message: str, extra: dict[str, Any] | None = None) -> None:
        self._log(20, "info", message, extra)

    def warning(self, message: str, extra: dict[str, Any] | None = None) -> None:
        self._log(30, "warning", message, extra)

    def error(self, message: str, extra: dict[str, Any] | None = None) -> None:
        self._log(40, "error", message, extra)

    def exception(self, message: str, extra: dict[str, Any] | None = None) -> None:
        """An ERROR line with the traceback of the exception being handled."""
        self._log(40, "exception", message, extra)


logger = RunLogger()
_metrics: Metrics | None = None
_emit_metrics = False  # set by enable_metrics: only a Lambda handler emits metrics


def lambda_logger() -> Logger:
    """Powertools' Logger itself, for a Lambda handler's decorators."""
    return logger.real()


def lambda_metrics() -> Metrics:
    """Powertools' Metrics (made at the first call), for a Lambda handler's decorator."""
    global _metrics
    if _metrics is None:
        from aws_lambda_powertools import Metrics

        _metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
    return _metrics


def enable_metrics(worker: str) -> None:
    """Called by a Lambda handler: metrics from now on carry the worker's dimension."""
    global _emit_metrics
    _emit_metrics = True
    lambda_metrics().set_default_dimensions(worker=worker)


def set_log_level(level: str) -> None:
    logger.setLevel(level)


def count(name: str, value: float = 1, unit: str = "Count") -> None:
    """Add a metric (``unit``: one of Powertools' ``MetricUnit`` values)."""
    if _emit_metrics:
        lambda_metrics().add_metric(name=name, unit=unit, value=value)


def record_outcome(outcome: Outcome) -> None:
    """One metric per input (its status's, from the status table); bytes and duration when done."""
    count(outcome.faces.metric)
    if outcome.status is Status.DONE:
        count("BytesIn", int(outcome.extra.get("bytes_in", 0)), "Bytes")
        count("BytesOut", int(outcome.extra.get("bytes_out", 0)), "Bytes")
        count("DurationMs", outcome.duration_ms, "Milliseconds")


def log_context(**fields: Any) -> None:
    """Add fields (worker, input, run_id) to every following log line of this invocation."""
    logger.append_keys(**fields)


def clear_context(*keys: str) -> None:
    logger.remove_keys(keys)
