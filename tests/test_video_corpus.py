"""Every real-world file in ../shared/corpus/video ends as success or a classified error.

Skipped cleanly where the corpus is absent. Known edge cases (see its SOURCES.md) are
checked for the fact that makes them interesting: rotation, VFR, data tracks, no audio.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import corpus_files

from shared.config import MountConfig
from shared.paths import input_from_path
from shared.runtime import execute
from shared.worker import Deadline
from workers.registry import get_worker

pytestmark = [pytest.mark.corpus,
              pytest.mark.skipif(shutil.which("ffprobe") is None, reason="needs ffprobe to check outputs")]
PERMANENT = {"corrupt-input", "unsupported-format", "encrypted-input", "limit-exceeded"}

# What each known file must give; files added to the corpus later need only be handled.
EXPECTED: dict[str, dict[str, Any]] = {
    "crunching.mp3": {"status": "done", "outputs": {"audio.m4a"}},
    "fire2.mp4": {"status": "done", "rotation": 180, "vfr": True},
    "flower.mp4": {"status": "done", "outputs": {"540p.mp4", "480p.mp4", "poster.jpg"}},
    "flower.webm": {"status": "done", "outputs": {"540p.mp4", "480p.mp4", "poster.jpg"}},
    "init_truncated.mp4": {"status": "failed", "code": "corrupt-input"},
    "no_audio_example.mp4": {"status": "done", "audio": False},
    "quicktime-hvc1.mov": {"status": "done", "rotation": 90, "upright": (720, 1280)},
}


def video_streams(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", f"file:{path}"],
                         check=True, capture_output=True).stdout
    streams: list[dict[str, Any]] = json.loads(out)["streams"]
    return streams


@pytest.mark.parametrize("source", corpus_files("video"), ids=lambda p: p.name)
def test_corpus_file_is_transcoded_or_refused_with_a_reason(source: Path, corpus: Path, mount: Path) -> None:
    shutil.copyfile(source, mount / "ingest" / source.name)
    cfg = MountConfig.load(mount)
    ref = input_from_path(cfg, f"ingest/{source.name}")
    assert ref is not None
    outcome = execute(get_worker("video-transcode"), ref, {"preset": "ultrafast"}, cfg, deadline=Deadline(None))
    expected = EXPECTED.get(source.name, {})
    assert outcome.status in ("done", "failed")
    if outcome.status == "failed":
        assert outcome.code in PERMANENT and outcome.message and len(outcome.message) < 800
    if "status" in expected:
        assert outcome.status == expected["status"], outcome.message
    if "code" in expected:
        assert outcome.code == expected["code"]
    if outcome.status != "done":
        return
    record = outcome.record
    assert record is not None
    files = {o["path"].rsplit("/", 1)[-1]: mount / o["path"] for o in record["outputs"]}
    if "outputs" in expected:
        assert set(files) == expected["outputs"]
    assert any(name.endswith((".mp4", ".m4a")) for name in files), f"a done run lists no media output: {files}"
    probe = record["facts"]["probe"]
    if "rotation" in expected:
        assert probe["video"]["rotation"] == expected["rotation"]
    if "vfr" in expected:
        assert probe["video"]["variable_frame_rate"] is expected["vfr"]
    for name, path in files.items():
        if not name.endswith((".mp4", ".m4a")):
            continue
        streams = video_streams(path)
        kinds = [s["codec_type"] for s in streams]
        assert kinds, f"{name} has no streams"
        assert kinds in (["video", "audio"], ["video"], ["audio"])  # data tracks never copied
        for stream in streams:
            assert stream["codec_name"] in ("h264", "aac")
            assert not stream.get("side_data_list") or stream["codec_type"] == "audio"
        if expected.get("audio") is False:
            assert kinds == ["video"]
    if "upright" in expected:
        top = max((p for n, p in files.items() if n.endswith(".mp4")), key=lambda p: p.stat().st_size)
        video = next(s for s in video_streams(top) if s["codec_type"] == "video")
        assert (video["width"], video["height"]) == expected["upright"]
