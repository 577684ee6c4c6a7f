"""The AWS fan-out: one durable orchestration per input, one invocation per segment.

    orchestrate (Lambda durable function, aws-durable-execution-sdk-python)
      step "plan"        probe, choose the run directory and the segments (checkpointed)
      map  "segments"    ctx.invoke(segment function) per segment and once for the audio
                         (the whole file's, so no AAC priming gaps), up to MAX_FANOUT at
                         once; each writes only its own files under the run directory
      step "commit"      the ordinary worker path (claim, join, poster, manifest): it finds
                         every segment done and only joins, so the commit happens once

Replays are safe: a checkpointed step is not run again, a segment whose done marker
exists is not encoded again, and a committed run is reported, not redone. The segment
function is a plain Lambda (this module's :func:`segment_handler`, same image).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from aws_durable_execution_sdk_python import DurableContext, StepContext, durable_execution
from aws_durable_execution_sdk_python.config import MapConfig, StepConfig
from aws_durable_execution_sdk_python.retries import RetryStrategyConfig, create_retry_strategy

from shared import config
from shared.config import MountConfig
from shared.errors import PermanentInputError, UsageError
from shared.events import WorkItem
from shared.paths import check_key, input_from_path, resolve_input
from shared.runs import OutputDir, Run
from shared.runtime import run_item
from shared.worker import Deadline
from workers.video_transcode import SPEC, core
from workers.video_transcode.encode import Rung, Segment, VideoPlan
from workers.video_transcode.options import parse

ENV_SEGMENT_FUNCTION = config.ENV_VIDEO_SEGMENT_FUNCTION
ENV_MAX_FANOUT = config.ENV_VIDEO_MAX_FANOUT
DEFAULT_SEGMENT_FUNCTION = "mountworks-video-segment"
MAX_FANOUT = 100  # segment invocations in flight per input, unless MOUNTWORKS_VIDEO_MAX_FANOUT says fewer
COMMIT_ATTEMPTS = 5  # the commit step is retried (each time in a fresh invocation) this often


class CommitNotDone(Exception):
    """The commit step stopped without committing (its invocation's time ran short, another
    holder's claim): raised so that the durable step is retried, not reported as done."""


COMMIT_RETRY = create_retry_strategy(RetryStrategyConfig(max_attempts=COMMIT_ATTEMPTS,
                                                         retryable_error_types=[CommitNotDone]))


def _config() -> MountConfig:
    return MountConfig.load()


def plan_run(event: Mapping[str, Any]) -> dict[str, Any]:
    """Probe the input and choose its run directory and segments (no output is written)."""
    cfg = _config()
    key = str(event.get("input") or "")
    ref = input_from_path(cfg, key)
    if ref is None:
        raise UsageError(f"input {key!r} is not under {cfg.ingest_prefix}/")
    raw_options = event.get("options") or {}
    options = parse(raw_options)
    path = resolve_input(cfg, ref)
    run = Run(cfg, SPEC.name, SPEC.version, ref, options.to_manifest())
    run.identify(path, path.stat())
    if run.committed() is not None:
        return {"segments": [], "reason": "already committed"}
    run_dir = run.attempt_dir()  # the one the commit step's claim will take
    try:
        info = core.inspect(path, options)
    except PermanentInputError as exc:  # the commit step records it as error.json
        return {"segments": [], "reason": exc.code}
    if not core.uses_segments(info, options):
        return {"segments": [], "reason": "single pass"}
    plan = core.video_plan(path, info, options)
    segments = core.plan_segments(info, plan, options)
    items: list[dict[str, Any]] = [{"segment": asdict(s)} for s in segments]
    if info.audio is not None and not core.copies_audio(info, options):  # encoded once, beside the segments
        items.insert(0, {"audio": {"stream": info.audio.index, "kbps": options.audio_bitrate,
                                   "threads": options.threads}})
    return {"run_dir": run.rel(run_dir), "plan": asdict(plan), "segments": items}


def segment_handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point of one unit: ``{"run_dir", "plan", "segment"}`` or ``{..., "audio"}``."""
    cfg = _config()
    run_dir = cfg.root / check_key(str(event["run_dir"]), what="run directory")
    OutputDir(run_dir, cfg.worker_dir(SPEC.name))  # refuses anything outside our own prefix
    raw = dict(event["plan"])
    plan = VideoPlan(**{**raw, "rungs": tuple(Rung(**r) for r in raw["rungs"])})
    getter = getattr(context, "get_remaining_time_in_millis", None)
    deadline = Deadline(getter() / 1000.0 if callable(getter) else None)
    run_dir.mkdir(parents=True, exist_ok=True)

    def stop() -> bool:
        left = deadline.remaining()
        return left is not None and left < core.STOP_MARGIN_SECONDS

    if "audio" in event:
        audio = event["audio"]
        cached = core.encode_audio_part(plan.source, int(audio["stream"]), int(audio["kbps"]),
                                        int(audio["threads"]), run_dir, stop)
        return {"audio": True, "cached": cached}
    segment = Segment(**event["segment"])
    cached = core.encode_one(plan, segment, run_dir, stop)
    return {"segment": segment.index, "cached": cached}


def commit_run(event: Mapping[str, Any], remaining_seconds: float | None = None) -> dict[str, Any]:
    """The ordinary worker path; with every segment done it only joins and commits.

    It runs under the invocation's own deadline (``remaining_seconds``): a join that would
    outlast it is stopped with nothing committed and raises :class:`CommitNotDone`.
    """
    cfg = _config()
    key = str(event.get("input") or "")
    ref = input_from_path(cfg, key)
    item = WorkItem("durable", key, input=ref, options=dict(event.get("options") or {}))
    outcome = run_item(SPEC, item, cfg, deadline=Deadline(remaining_seconds), invocation="durable")
    if outcome.status == "retryable":
        raise CommitNotDone(outcome.message or "the commit step stopped before committing")
    summary = outcome.summary()
    if outcome.record is not None:
        summary["facts"] = outcome.record.get("facts")
    return summary


@durable_execution
def orchestrate(event: dict[str, Any], context: DurableContext) -> dict[str, Any]:
    """Durable entry point: ``{"input": "ingest/film.mp4", "options": {"segment_seconds": 60}}``."""
    planned: dict[str, Any] = context.step(lambda _: plan_run(event), name="plan")
    function = config.video_segment_function(DEFAULT_SEGMENT_FUNCTION)

    def encode_remote(ctx: DurableContext, item: dict[str, Any], index: int, _: Any) -> Any:
        payload = {"run_dir": planned["run_dir"], "plan": planned["plan"], **item}
        return ctx.invoke(function, payload, name="audio" if "audio" in item else f"segment-{index}")

    if planned["segments"]:
        context.map(planned["segments"], encode_remote, name="segments",
                    config=MapConfig(max_concurrency=config.video_max_fanout(MAX_FANOUT)))

    def commit(_: StepContext) -> dict[str, Any]:
        getter = getattr(context.lambda_context, "get_remaining_time_in_millis", None)
        return commit_run(event, getter() / 1000.0 if callable(getter) else None)

    result: dict[str, Any] = context.step(commit, name="commit", config=StepConfig(retry_strategy=COMMIT_RETRY))
    return result
