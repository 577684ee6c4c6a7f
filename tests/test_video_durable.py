"""The AWS fan-out, run locally with the durable-execution SDK's own test runner.

The orchestrator invokes the segment function once per segment (registered with the
runner as a plain Lambda); the final step commits through the ordinary worker path,
which must find every segment done and only join them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("aws_durable_execution_sdk_python_testing")
pytestmark = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="needs ffmpeg and ffprobe")


@pytest.fixture
def loops_closed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The SDK's test runner makes event loops it never closes: close them (and their
    self-pipe sockets) at the end, so that no ResourceWarning surfaces in a later test."""
    made: list[asyncio.AbstractEventLoop] = []
    real = asyncio.new_event_loop

    def new_event_loop() -> asyncio.AbstractEventLoop:
        loop = real()
        made.append(loop)
        return loop

    monkeypatch.setattr(asyncio, "new_event_loop", new_event_loop)
    yield
    for loop in made:
        if not loop.is_running() and not loop.is_closed():
            loop.close()


@pytest.mark.slow
@pytest.mark.usefixtures("loops_closed")
@pytest.mark.parametrize("audio_copy", [True, False], ids=["audio-copied", "audio-encoded"])
def test_durable_orchestration_fans_out_segments_and_commits_once(mount: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  audio_copy: bool) -> None:
    from aws_durable_execution_sdk_python.lambda_service import InvocationStatus
    from aws_durable_execution_sdk_python_testing import DurableFunctionTestRunner

    from workers.video_transcode import durable

    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=s=320x240:r=25:d=6", "-f", "lavfi", "-i", "sine=d=6", "-c:v", "libx264", "-preset",
                    "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
                    str(mount / "ingest" / "film.mp4")], check=True)
    monkeypatch.setenv("MOUNTWORKS_MOUNT", str(mount))
    invoked: list[int] = []

    def segment_function(event: dict[str, object], context: object) -> dict[str, object]:
        result = durable.segment_handler(event, context)
        invoked.append(-1 if result.get("audio") else int(str(result["segment"])))
        return result

    event = {"input": "ingest/film.mp4", "options": {"segment_seconds": 2, "poster": False, "audio_copy": audio_copy}}
    with DurableFunctionTestRunner(handler=durable.orchestrate) as runner:
        runner.register_function(durable.DEFAULT_SEGMENT_FUNCTION, segment_function)
        result = runner.run(input=json.dumps(event), execution_timeout=120)
    assert result.status is InvocationStatus.SUCCEEDED, result.error
    summary = json.loads(str(result.result))
    assert summary["status"] == "done"
    segments = summary["facts"]["segments"]
    # the audio is a unit of its own when it is encoded; copied, the join takes it from the source
    assert sorted(invoked) == [*([] if audio_copy else [-1]), *range(segments["count"])] and segments["count"] >= 2
    assert segments["reused"] == segments["count"] and segments["audio_reused"] is not audio_copy  # only joined
    assert summary["facts"]["audio"] == ("copied" if audio_copy else "encoded")
    manifests = list((mount / "workspace" / "video-transcode").rglob("manifest.json"))
    assert len(manifests) == 1
    out = manifests[0].parent / "240p.mp4"
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-show_streams", "-of", "json",
                                       str(out)], check=True, capture_output=True).stdout)
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    assert video["nb_read_packets"] == "150"
    assert [s["codec_type"] for s in probe["streams"]] == ["video", "audio"]


def test_the_commit_step_keeps_to_its_invocations_deadline(mount: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Joining (or, with segments missing, encoding) under too little time stops with nothing
    committed and raises, so the durable step is retried in a fresh invocation."""
    from workers.video_transcode import durable

    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=s=320x240:r=25:d=6", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                    str(mount / "ingest" / "film.mp4")], check=True)
    monkeypatch.setenv("MOUNTWORKS_MOUNT", str(mount))
    event = {"input": "ingest/film.mp4", "options": {"segment_seconds": 2, "poster": False}}
    with pytest.raises(durable.CommitNotDone, match="time"):
        durable.commit_run(event, remaining_seconds=8.0)  # under the worker's 10 s stop margin
    assert not list((mount / "workspace").rglob("manifest.json"))
    summary = durable.commit_run(event, remaining_seconds=None)  # the retry: its claim was released
    assert summary["status"] == "done"
    assert durable.COMMIT_RETRY(durable.CommitNotDone("x"), 1).should_retry
    assert not durable.COMMIT_RETRY(RuntimeError("a bug"), 1).should_retry
