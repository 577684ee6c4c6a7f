"""Logs and metrics: a Powertools Logger (JSON on stderr) and EMF metrics per worker.

Metrics are only emitted inside a Lambda invocation (the handler flushes them); the CLI
records none, since EMF lines on stdout would corrupt its JSON output.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from shared.config import log_level, metrics_namespace, service_name
from shared.outcomes import Outcome, Status

SERVICE = "mountworks"
NAMESPACE = metrics_namespace(SERVICE)

class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current ``sys.stderr`` (CLI redirections and test capture included)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


logger = Logger(
    service=service_name(SERVICE),
    level=log_level("INFO"),
    logger_handler=_StderrHandler(),
)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
_emit_metrics = False


def enable_metrics(worker: str) -> None:
    """Called by a Lambda handler: metrics from now on carry the worker's dimension."""
    global _emit_metrics
    _emit_metrics = True
    metrics.set_default_dimensions(worker=worker)


def set_log_level(level: str) -> None:
    logger.setLevel(level.upper())


def count(name: str, value: float = 1, unit: str = MetricUnit.Count.value) -> None:
    if _emit_metrics:
        metrics.add_metric(name=name, unit=unit, value=value)


def record_outcome(outcome: Outcome) -> None:
    """One metric per input (its status's, from the status table); bytes and duration when done."""
    count(outcome.faces.metric)
    if outcome.status is Status.DONE:
        count("BytesIn", int(outcome.extra.get("bytes_in", 0)), MetricUnit.Bytes.value)
        count("BytesOut", int(outcome.extra.get("bytes_out", 0)), MetricUnit.Bytes.value)
        count("DurationMs", outcome.duration_ms, MetricUnit.Milliseconds.value)


def log_context(**fields: Any) -> None:
    """Add fields (worker, input, run_id) to every following log line of this invocation."""
    logger.append_keys(**fields)


def clear_context(*keys: str) -> None:
    logger.remove_keys(list(keys))
