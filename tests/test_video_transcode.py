"""video-transcode on generated clips, checked with ffprobe on the outputs.

Clips are made with ffmpeg's lavfi sources (testsrc2 + sine), 1-7 s at 320x240, so the
whole file runs in well under a minute on two cores. Broken inputs are made by editing
good bytes (truncation) or by ffmpeg itself (CENC encryption).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, Put, children_of

from shared.config import MountConfig
from shared.errors import UsageError
from shared.outcomes import Outcome
from shared.paths import input_from_path
from shared.runtime import execute, run_item
from shared.worker import Deadline
from workers.registry import get_worker
from workers.video_transcode import SPEC, encode, is_media, probe, runner
from workers.video_transcode.options import parse

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
pytestmark = pytest.mark.skipif(FFMPEG is None or FFPROBE is None, reason="needs ffmpeg and ffprobe on PATH")


def newer_ffmpeg() -> str:
    """The imageio-ffmpeg wheel's ffmpeg (recent: has -display_rotation)."""
    import imageio_ffmpeg

    exe: str = imageio_ffmpeg.get_ffmpeg_exe()
    return exe


def ff(*args: str, exe: str | None = None) -> None:
    subprocess.run([exe or str(FFMPEG), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def make_clip(path: Path, *, seconds: float = 2, size: str = "320x240", rate: int = 30, audio: bool = True,
              extra: tuple[str, ...] = ()) -> Path:
    inputs = ["-f", "lavfi", "-i", f"testsrc2=s={size}:r={rate}:d={seconds}"]
    if audio:
        inputs += ["-f", "lavfi", "-i", f"sine=frequency=440:d={seconds}"]
    codecs = ["-c:v", "libx264", "-preset", "ultrafast", "-g", str(rate), "-pix_fmt", "yuv420p"]
    if audio:
        codecs += ["-c:a", "aac", "-shortest"]
    ff(*inputs, *codecs, *extra, str(path))
    return path


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run([str(FFPROBE), "-v", "error", "-show_format", "-show_streams", "-count_packets",
                          "-of", "json", f"file:{path}"], check=True, capture_output=True).stdout
    data: dict[str, Any] = json.loads(out)
    return data


def streams(path: Path, kind: str) -> list[dict[str, Any]]:
    return [s for s in ffprobe(path)["streams"] if s["codec_type"] == kind]


Run = Callable[..., Outcome]
PutClip = Callable[..., str]


@pytest.fixture
def run(mount: Path) -> Run:
    """``run(rel, deadline=None, **options)``: the worker on ``rel`` (under the mount) -> its outcome."""

    def _run(rel: str, deadline: float | None = None, **options: Any) -> Outcome:
        cfg = MountConfig.load(mount)
        ref = input_from_path(cfg, rel)
        assert ref is not None
        return execute(get_worker("video-transcode"), ref, options, cfg, deadline=Deadline(deadline))

    return _run


def video_packet_times(path: Path) -> list[float]:
    """The presentation times of the video stream's packets, sorted (display order)."""
    times = subprocess.run([str(FFPROBE), "-v", "error", "-select_streams", "v", "-show_entries",
                            "packet=pts_time", "-of", "csv=p=0", str(path)], capture_output=True, text=True,
                           check=True).stdout.split()
    return sorted(float(t) for t in times)


def outputs(mount: Path, outcome: Outcome) -> dict[str, Path]:
    assert outcome.record is not None
    return {o["path"].rsplit("/", 1)[-1]: mount / o["path"] for o in outcome.record["outputs"]}


def output_record(outcome: Outcome, name: str) -> dict[str, Any]:
    assert outcome.record is not None
    return next(o for o in outcome.record["outputs"] if o["path"].endswith("/" + name))


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def basic_clip(clips: Path) -> Path:
    return make_clip(clips / "basic.mp4", seconds=2)


@pytest.fixture
def put_clip(put: Put) -> PutClip:
    """``put_clip(clip, name=None)``: copy a generated clip into ingest/ (as ``name``) -> ``ingest/<name>``."""

    def _put_clip(source: Path, name: str | None = None) -> str:
        return put(name or source.name, source)

    return _put_clip


# ----------------------------------------------------------------------- registration


def test_sniff_accepts_media_and_refuses_images_and_text(basic_clip: Path) -> None:
    assert is_media(basic_clip.read_bytes()[:64])
    assert is_media(b"\x1a\x45\xdf\xa3" + b"\x00" * 60)  # Matroska/WebM
    assert is_media(b"ID3\x04" + b"\x00" * 60)
    assert not is_media(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")  # a HEIC photo
    assert not is_media(b"GIF89a" + b"\x00" * 58)
    assert not is_media(b"just some text, not a video\n")
    assert SPEC.hinted_by("clip.MOV") and SPEC.hinted_by("song.mp3")


def test_options_are_checked_and_normalized() -> None:
    options = parse({"ladder": "480p,1080,720", "crf": "20", "preset": "fast"})
    assert options.ladder == (1080, 720, 480) and options.crf == 20 and options.preset == "fast"
    assert parse(None).to_manifest()["ladder"] == [1080, 720, 480]
    for bad in ({"ladder": "12"}, {"crf": 60}, {"preset": "warp"}, {"colour": "red"}, {"segment_seconds": -1}):
        with pytest.raises(UsageError):
            parse(bad)


# ----------------------------------------------------------------------- renditions


def test_ladder_is_capped_at_the_source_with_h264_aac_faststart_and_probe_facts(mount: Path, clips: Path,
                                                                                put_clip: PutClip, run: Run) -> None:
    rel = put_clip(make_clip(clips / "vga.mp4", seconds=2, size="640x480"))
    outcome = run(rel, ladder="1080,720,480,360", poster=False)
    assert outcome.status == "done", outcome.message
    files = outputs(mount, outcome)
    assert sorted(files) == ["360p.mp4", "480p.mp4"]  # 1080 and 720 would upscale: one at source size
    for label, (width, height) in {"480p.mp4": (640, 480), "360p.mp4": (480, 360)}.items():
        video, = streams(files[label], "video")
        audio, = streams(files[label], "audio")
        assert (video["codec_name"], video["pix_fmt"], video["width"], video["height"]) == (
            "h264", "yuv420p", width, height)
        assert audio["codec_name"] == "aac"
        head = files[label].read_bytes()
        assert head.index(b"moov") < head.index(b"mdat")  # +faststart
        assert output_record(outcome, label)["width"] == width
    facts = outcome.record["facts"]["probe"]  # type: ignore[index]
    assert facts["container"].startswith("mov,mp4")
    assert abs(facts["duration"] - 2.0) < 0.1 and facts["bitrate"] > 0
    assert facts["video"]["codec"] == "h264" and (facts["video"]["width"], facts["video"]["height"]) == (640, 480)
    assert facts["video"]["frame_rate"] == 30.0 and facts["video"]["variable_frame_rate"] is False
    assert facts["video"]["rotation"] == 0
    assert facts["audio"]["codec"] == "aac" and facts["audio"]["channel_layout"] == "mono"
    assert [s["type"] for s in facts["streams"]] == ["video", "audio"]


def test_odd_sizes_give_even_dimensions() -> None:
    video = probe.VideoStream(0, "h264", None, 1279, 719, "yuv420p", 8, 30.0, "30/1", False, 0, None, None, 0.0)
    rungs = encode.ladder_for(video, (1080, 720, 480))
    assert [(r.width, r.height, r.name) for r in rungs] == [(1278, 718, "718p.mp4"), (854, 480, "480p.mp4")]
    wide = probe.VideoStream(0, "h264", None, 1920, 1080, "yuv420p", 8, 30.0, "30/1", False, 90, None, None, 0.0)
    assert [(r.width, r.height) for r in encode.ladder_for(wide, (1080, 720))] == [(1080, 1920), (720, 1280)]


def test_phone_rotation_gives_an_upright_output_without_a_display_matrix(mount: Path, clips: Path, put_clip: PutClip,
                                                                         run: Run) -> None:
    # left half white, right half black: after a 90 degree turn one half is on top
    plain = clips / "halves.mp4"
    ff("-f", "lavfi", "-i", "color=white:s=160x240:d=1", "-f", "lavfi", "-i", "color=black:s=160x240:d=1",
       "-filter_complex", "[0][1]hstack", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(plain))
    rotated = clips / "rotated.mp4"
    ff("-display_rotation", "90", "-i", str(plain), "-c", "copy", str(rotated), exe=newer_ffmpeg())
    rel = put_clip(rotated)
    outcome = run(rel, poster=True)
    assert outcome.status == "done", outcome.message
    facts = outcome.record["facts"]["probe"]["video"]  # type: ignore[index]
    assert facts["rotation"] in (90, 270) and (facts["width"], facts["height"]) == (320, 240)
    out, = [p for n, p in outputs(mount, outcome).items() if n.endswith(".mp4")]
    video, = streams(out, "video")
    assert (video["width"], video["height"]) == (240, 320)
    assert not video.get("side_data_list"), "a display matrix would make players rotate a second time"
    # the picture itself is turned as ffmpeg's autorotation turns it (reference decode)
    ref = clips / "ref.png"
    ff("-i", str(rotated), "-frames:v", "1", str(ref))
    mine = clips / "mine.png"
    ff("-i", str(out), "-frames:v", "1", str(mine))
    from PIL import Image, ImageStat

    def top_luma(path: Path) -> float:
        with Image.open(path) as image:
            gray = image.convert("L")
            return float(ImageStat.Stat(gray.crop((0, 0, gray.width, gray.height // 2))).mean[0])

    assert abs(top_luma(ref) - top_luma(mine)) < 30
    assert abs(top_luma(mine) - 128) > 80  # one half is clearly white or black: turned, not squeezed


def test_anamorphic_source_gives_square_pixels_at_its_display_shape(mount: Path, clips: Path, put_clip: PutClip,
                                                                    run: Run) -> None:
    """1440x1080-style sources store wide pictures in narrow pixels (SAR 4:3): the output
    must show the same shape with square pixels, not a squeezed picture."""
    rel = put_clip(make_clip(clips / "anamorphic.mp4", extra=("-vf", "setsar=4/3")))
    outcome = run(rel, poster=False, ladder="240")
    assert outcome.status == "done", outcome.message
    assert outcome.record["facts"]["probe"]["video"]["sample_aspect_ratio"] == "4:3"  # type: ignore[index]
    video, = streams(outputs(mount, outcome)["240p.mp4"], "video")
    assert (video["width"], video["height"]) == (426, 240)  # 320 x 4/3 = 427 -> even
    assert video.get("sample_aspect_ratio", "1:1") in ("1:1", "N/A")


def test_variable_frame_rate_is_detected_and_output_at_a_constant_rate(mount: Path, clips: Path, put_clip: PutClip,
                                                                       run: Run) -> None:
    vfr = clips / "vfr.mp4"
    ff("-f", "lavfi", "-i", "testsrc2=s=320x240:r=30:d=3", "-vf", r"settb=1/90000,setpts=N/30/TB+0.012*mod(N\,2)/TB",
       "-fps_mode", "passthrough", "-enc_time_base:v", "1/90000", "-c:v", "libx264", "-preset", "ultrafast",
       "-pix_fmt", "yuv420p", "-video_track_timescale", "90000", str(vfr))
    rel = put_clip(vfr)
    outcome = run(rel, poster=False)
    assert outcome.status == "done", outcome.message
    assert outcome.record["facts"]["probe"]["video"]["variable_frame_rate"] is True  # type: ignore[index]
    out = outputs(mount, outcome)["240p.mp4"]
    pts = video_packet_times(out)
    deltas = {round(b - a, 4) for a, b in itertools.pairwise(pts)}
    assert len(deltas) == 1 and abs(deltas.pop() - 1 / 30) < 0.0002
    duration = float(ffprobe(out)["format"]["duration"])
    assert abs(duration - 3.0) <= 1 / 30 + 0.03


def test_hevc_10_bit_becomes_h264_8_bit_and_data_tracks_are_ignored(mount: Path, clips: Path, put_clip: PutClip,
                                                                    run: Run) -> None:
    srt = clips / "subs.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    hevc = clips / "hevc10.mp4"
    ff("-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=1", "-f", "lavfi", "-i", "sine=d=1", "-i", str(srt),
       "-map", "0", "-map", "1", "-map", "2", "-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le",
       "-x265-params", "log-level=error", "-tag:v", "hvc1", "-c:a", "aac", "-c:s", "mov_text", str(hevc))
    rel = put_clip(hevc)
    outcome = run(rel, poster=False)
    assert outcome.status == "done", outcome.message
    facts = outcome.record["facts"]["probe"]  # type: ignore[index]
    assert facts["video"]["codec"] == "hevc" and facts["video"]["bit_depth"] == 10
    assert [s["type"] for s in facts["streams"]] == ["video", "audio", "subtitle"]
    out = outputs(mount, outcome)["240p.mp4"]
    kinds = [(s["codec_type"], s["codec_name"], s.get("pix_fmt")) for s in ffprobe(out)["streams"]]
    assert kinds == [("video", "h264", "yuv420p"), ("audio", "aac", None)]


def test_video_without_audio(mount: Path, clips: Path, put_clip: PutClip, run: Run) -> None:
    rel = put_clip(make_clip(clips / "silent.mp4", audio=False))
    outcome = run(rel)
    assert outcome.status == "done", outcome.message
    out = outputs(mount, outcome)["240p.mp4"]
    assert streams(out, "audio") == [] and len(streams(out, "video")) == 1


def test_audio_only_gives_an_aac_m4a(mount: Path, clips: Path, put_clip: PutClip, run: Run) -> None:
    wav = clips / "tone.wav"
    ff("-f", "lavfi", "-i", "sine=frequency=300:d=2", "-ac", "2", str(wav))
    rel = put_clip(wav)
    outcome = run(rel, audio_bitrate=96)
    assert outcome.status == "done", outcome.message
    files = outputs(mount, outcome)
    assert list(files) == ["audio.m4a"]
    audio, = streams(files["audio.m4a"], "audio")
    assert audio["codec_name"] == "aac" and audio["channels"] == 2
    assert outcome.record["facts"]["mode"] == "audio-only"  # type: ignore[index]


def test_a_wav_header_without_samples_is_empty_input(clips: Path, put_clip: PutClip, run: Run) -> None:
    """It was 'done', with a 0-second audio.m4a."""
    wav = clips / "nothing.wav"
    ff("-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo", "-t", "0", str(wav))
    outcome = run(put_clip(wav))
    assert (outcome.status, outcome.code) == ("failed", "empty-input"), outcome.message
    assert "no audio samples" in (outcome.message or "")


def _idet(path: Path) -> dict[str, int]:
    """ffmpeg's interlace detector over the whole file: frames it finds combed (tff, bff) or not."""
    run = subprocess.run([str(FFMPEG), "-hide_banner", "-i", str(path), "-vf", "idet", "-f", "null", "-"],
                         capture_output=True, text=True, check=True)
    line = next(x for x in run.stderr.splitlines() if "Multi frame detection" in x)
    numbers = map(int, re.findall(r"\d+", line.split(":", 1)[1]))
    return dict(zip(("tff", "bff", "progressive", "undetermined"), numbers, strict=True))


@pytest.mark.parametrize(("name", "codec"), [("broadcast.ts", ["-c:v", "mpeg2video", "-b:v", "4M"]),
                                             ("camcorder.mts", ["-c:v", "libx264", "-x264opts", "tff=1"])],
                         ids=["mpeg2-ts", "h264-avchd"])
def test_interlaced_sources_are_deinterlaced_before_scaling(name: str, codec: list[str], mount: Path, clips: Path,
                                                             put_clip: PutClip, run: Run) -> None:
    """Fields of two moments woven into each frame (broadcast, DV, AVCHD camcorders): scaled as
    they are, every moving edge comes out combed."""
    source = clips / name
    ff("-f", "lavfi", "-i", "testsrc2=size=720x576:rate=50:duration=1,tinterlace=mode=interleave_top,setfield=tff",
       *codec, "-flags", "+ilme+ildct", "-top", "1", "-pix_fmt", "yuv420p", str(source))
    assert _idet(source)["tff"] > 20  # the source really is combed
    outcome = run(put_clip(source), ladder="576", poster=False)  # the source size: no scaling to hide combs
    assert outcome.status == "done", outcome.message
    facts = outcome.record["facts"]  # type: ignore[index]
    assert facts["probe"]["video"]["field_order"] == "tt" and facts["deinterlaced"] is True
    seen = _idet(outputs(mount, outcome)["576p.mp4"])
    assert seen["progressive"] > 3 * (seen["tff"] + seen["bff"]), seen  # without: {tff: 25, progressive: 0}


def test_progressive_sources_are_left_alone(clips: Path, put_clip: PutClip, run: Run) -> None:
    outcome = run(put_clip(make_clip(clips / "progressive.mp4", seconds=1)), poster=False)
    assert outcome.status == "done", outcome.message
    assert outcome.record["facts"]["deinterlaced"] is False  # type: ignore[index]


def test_poster_skips_a_black_opening(mount: Path, clips: Path, put_clip: PutClip, run: Run) -> None:
    clip = clips / "fade.mp4"
    ff("-f", "lavfi", "-i", "color=black:s=320x240:r=25:d=2", "-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=2",
       "-filter_complex", "[0][1]concat=n=2:v=1", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt",
       "yuv420p", str(clip))
    rel = put_clip(clip)
    outcome = run(rel)
    assert outcome.status == "done", outcome.message
    poster = output_record(outcome, "poster.jpg")
    assert poster["media_type"] == "image/jpeg" and poster["time"] >= 1.5
    from PIL import Image, ImageStat

    with Image.open(outputs(mount, outcome)["poster.jpg"]) as image:
        assert image.size == (320, 240)
        assert ImageStat.Stat(image.convert("L")).mean[0] > 40


def test_sprite_and_webvtt_index_and_hls(mount: Path, clips: Path, put_clip: PutClip, run: Run) -> None:
    rel = put_clip(make_clip(clips / "five.mp4", seconds=5))
    outcome = run(rel, sprite=True, sprite_interval=1, hls=True, hls_segment_seconds=2)
    assert outcome.status == "done", outcome.message
    files = outputs(mount, outcome)
    cues = [line for line in files["sprite.vtt"].read_text().splitlines() if "#xywh=" in line]
    assert len(cues) == 5 and cues[1] == "sprite.jpg#xywh=160,0,160,120"
    from PIL import Image

    with Image.open(files["sprite.jpg"]) as sprite:
        assert sprite.size == (5 * 160, 120)
    master = files["master.m3u8"].read_text()
    assert "#EXT-X-STREAM-INF:" in master and "RESOLUTION=320x240" in master and "240p/index.m3u8" in master
    video, = streams(files["240p.mp4"], "video")  # CODECS names the level x264 chose (1.3 here), not 4.0
    assert video["profile"] == "High" and f'CODECS="avc1.6400{int(video["level"]):02x},mp4a.40.2"' in master
    playlist = files["index.m3u8"].read_text()
    assert '#EXT-X-MAP:URI="init.mp4"' in playlist and playlist.count(".m4s") >= 2
    for line in playlist.splitlines():
        if line.endswith(".m4s"):
            assert (files["index.m3u8"].parent / line).is_file()


# ----------------------------------------------------------------------- hostile inputs


def test_a_name_like_an_option_with_spaces_and_quotes_is_just_a_name(mount: Path, basic_clip: Path, put_clip: PutClip,
                                                                     run: Run) -> None:
    rel = put_clip(basic_clip, '-weird name "q".mp4')
    outcome = run(rel, sprite=True, hls=True)
    assert outcome.status == "done", outcome.message
    assert {"240p.mp4", "poster.jpg", "sprite.jpg", "master.m3u8"} <= set(outputs(mount, outcome))


def test_a_percent_sign_in_the_path_is_not_an_image_pattern(mount: Path, basic_clip: Path, put_clip: PutClip,
                                                            run: Run) -> None:
    (mount / "ingest" / "100%d").mkdir()
    rel = put_clip(basic_clip, "100%d/clip %03d.mp4")
    outcome = run(rel, sprite=True)
    assert outcome.status == "done", outcome.message
    assert outputs(mount, outcome)["poster.jpg"].stat().st_size > 0


@pytest.mark.parametrize(("label", "make", "code", "needle"), [
    ("truncated", lambda good, path: path.write_bytes(good.read_bytes()[: good.stat().st_size // 2]),
     "corrupt-input", "moov"),
    ("zero-length", lambda good, path: path.write_bytes(b""), "empty-input", "empty"),  # as every worker says
    ("text", lambda good, path: path.write_text("this is not a video\n" * 50), "unsupported-format",
     "not an audio or video file"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_broken_inputs_are_classified_permanent_errors(mount: Path, clips: Path, label: str,
                                                       make: Callable[[Path, Path], None], code: str,
                                                       needle: str, run: Run) -> None:
    good = make_clip(clips / f"good-{label}.mp4", seconds=1)  # moov at the end: cutting removes it
    make(good, mount / "ingest" / f"{label}.mp4")
    outcome = run(f"ingest/{label}.mp4")
    assert outcome.status == "failed" and outcome.code == code
    assert needle in (outcome.message or "")
    assert len(outcome.message or "") < 800  # the relevant ffmpeg lines, not all of stderr
    run_dir = mount / "workspace" / "video-transcode" / f"{label}.mp4" / str(outcome.run_id)
    assert (run_dir / "error.json").is_file() and not (run_dir / "manifest.json").exists()


def test_an_ffmpeg_that_outgrows_its_share_of_the_function_memory_is_a_memory_limit(
        mount: Path, clips: Path, put_clip: PutClip, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 4K source through the 1080/720/480 ladder holds ~500 MB in ffmpeg. In a 300 MB
    function that kills the function (nothing committed, on every retry); ffmpeg is now
    stopped at its share (here the 256 MB floor) and the input ends limit-exceeded (memory)."""
    big = make_clip(clips / "uhd.mp4", seconds=2, size="3840x2160", rate=25, audio=False)
    rel = put_clip(big)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "300")
    outcome = run(rel, poster=False)
    assert outcome.status == "failed" and outcome.code == "limit-exceeded", outcome.message
    assert outcome.record is not None and outcome.record["error"]["limit"] == "memory", outcome.record
    assert "256 MB" in (outcome.message or "") and "MemorySize" in (outcome.message or "")
    small = run(put_clip(make_clip(clips / "small-in-300.mp4", seconds=1)), poster=False)
    assert small.status == "done", small.message  # the same function still encodes what fits it


def test_garbled_picture_data_is_corrupt_although_ffmpeg_exits_0(mount: Path, clips: Path, run: Run) -> None:
    good = make_clip(clips / "to-garble.mp4", seconds=3, audio=False, extra=("-movflags", "+faststart"))
    data = bytearray(good.read_bytes())
    mdat = data.index(b"mdat") + 8
    start, size = mdat + (len(data) - mdat) * 4 // 10, (len(data) - mdat) * 35 // 100  # a third of the pictures
    data[start:start + size] = random.Random(1).randbytes(size)
    (mount / "ingest" / "garbled.mp4").write_bytes(bytes(data))
    assert subprocess.run([str(FFMPEG), "-v", "quiet", "-i", str(mount / "ingest" / "garbled.mp4"), "-f", "null",
                           "-"], check=False).returncode == 0  # ffmpeg itself does not fail
    outcome = run("ingest/garbled.mp4")
    assert outcome.status == "failed" and outcome.code == "corrupt-input", outcome.message
    assert "decoding errors" in (outcome.message or "") and len(outcome.message or "") < 800


def test_encrypted_mp4_is_refused_instead_of_transcoded_to_garbage(mount: Path, clips: Path, basic_clip: Path,
                                                                   put_clip: PutClip, run: Run) -> None:
    enc = clips / "cenc.mp4"
    ff("-i", str(basic_clip), "-c", "copy", "-encryption_scheme", "cenc-aes-ctr",
       "-encryption_key", "76a6c65c5ea762046bd749a2e632ccbb", "-encryption_kid", "a7e61c373e219033c21091fa607bf3b8",
       str(enc))
    # ffmpeg's own reaction varies by version (exit 0 with garbage pictures, or a decode
    # failure that reads as "corrupt"): the encryption boxes are what tell us the truth
    rel = put_clip(enc)
    outcome = run(rel)
    assert outcome.status == "failed" and outcome.code == "encrypted-input", outcome.message


def test_stderr_is_kept_bounded_and_progress_is_logged(basic_clip: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(runner, "PROGRESS_LOG_SECONDS", 0.0)
    argv = [str(FFMPEG), "-hide_banner", "-nostdin", "-loglevel", "debug", "-debug_ts", "-progress", "pipe:1", "-i",
            runner.media_url(basic_clip), "-f", "null", "-"]
    result = runner.run(argv, label="debug-run", cwd=tmp_path)
    assert result.returncode == 0 and result.frames == 60
    assert len(result.head) <= runner.STDERR_HEAD_LINES and len(result.tail) <= runner.STDERR_TAIL_LINES
    assert result.dropped > 0  # debug output is far longer than what we keep
    assert '"message":"ffmpeg progress"' in capfd.readouterr().err


# ----------------------------------------------------------------------- deadline


def ffmpeg_children() -> list[int]:
    return [pid for pid, name in children_of(os.getpid()).items() if "ffmpeg" in name]


@pytest.mark.slow
@pytest.mark.parametrize("segment_seconds", [0, 2], ids=["single-pass", "segments"])
def test_deadline_stops_ffmpeg_retryable_and_commits_nothing(mount: Path, clips: Path, segment_seconds: int,
                                                             put_clip: PutClip) -> None:
    clip = clips / "long.mp4"
    if not clip.exists():
        make_clip(clip, seconds=12, size="640x480")
    rel = put_clip(clip, f"long-{segment_seconds}.mp4")
    cfg = MountConfig.load(mount)
    ref = input_from_path(cfg, rel)
    assert ref is not None
    from shared.events import WorkItem

    item = WorkItem("test", rel, input=ref,
                    options={"preset": "veryslow", "segment_seconds": segment_seconds})
    started = time.monotonic()
    outcome = run_item(get_worker("video-transcode"), item, cfg, deadline=Deadline(11.5))
    assert outcome.status == "retryable" and outcome.code == "deadline", outcome.message
    assert time.monotonic() - started < 8
    assert ffmpeg_children() == []
    run_dirs = list((mount / "workspace" / "video-transcode" / f"long-{segment_seconds}.mp4").glob("*/"))
    assert run_dirs and not any((d / "manifest.json").exists() or (d / "error.json").exists() for d in run_dirs)
    # no unplayable partial rendition is left where a reader would take it for an output (segments/,
    # kept for the retry to reuse, is not an output name)
    assert [p.name for d in run_dirs for p in d.iterdir() if p.is_file() and not p.name.startswith(".claim")] == []


# ----------------------------------------------------------------------- segment-parallel


@pytest.mark.slow
@pytest.mark.parametrize("audio_copy", [True, False], ids=["audio-copied", "audio-encoded"])
def test_segment_parallel_matches_single_pass_frame_for_frame(mount: Path, clips: Path, audio_copy: bool,
                                                              put_clip: PutClip, run: Run) -> None:
    rel = put_clip(make_clip(clips / "seven.mp4", seconds=7))
    single = run(rel, poster=False, audio_copy=audio_copy)
    split = run(rel, poster=False, segment_seconds=2, audio_copy=audio_copy)
    assert single.status == split.status == "done", (single.message, split.message)
    assert split.record["facts"]["segments"]["count"] >= 3  # type: ignore[index]
    expected = "copied" if audio_copy else "encoded"
    assert single.record["facts"]["audio"] == split.record["facts"]["audio"] == expected  # type: ignore[index]
    a, b = outputs(mount, single)["240p.mp4"], outputs(mount, split)["240p.mp4"]
    sa, sb = ffprobe(a), ffprobe(b)
    va, = (s for s in sa["streams"] if s["codec_type"] == "video")
    vb, = (s for s in sb["streams"] if s["codec_type"] == "video")
    assert va["nb_read_packets"] == vb["nb_read_packets"] == "210"
    assert abs(float(va["duration"]) - float(vb["duration"])) <= 1 / 30
    aa, = (s for s in sa["streams"] if s["codec_type"] == "audio")
    ab, = (s for s in sb["streams"] if s["codec_type"] == "audio")
    assert abs(float(aa["duration"]) - float(ab["duration"])) < 0.03
    assert float(ab["start_time"]) == float(vb["start_time"]) == 0.0  # A/V start together
    # the same source frame at every position: no gap or duplicate at the boundaries
    stats = subprocess.run([str(FFMPEG), "-hide_banner", "-i", str(a), "-i", str(b), "-lavfi",
                            "[0:v][1:v]psnr=stats_file=-", "-f", "null", "-"], capture_output=True, text=True,
                           check=True).stdout
    worst = min(float(line.split("psnr_y:")[1].split()[0]) for line in stats.splitlines() if "psnr_y:" in line)
    assert worst > 30, f"a frame differs between the two encodes (PSNR {worst:.1f} dB)"
    run_dir = b.parent
    assert not (run_dir / encode.SEGMENTS_DIR).exists()  # intermediate segments are gone before the commit


def test_segments_already_encoded_elsewhere_are_reused(mount: Path, clips: Path, put_clip: PutClip, run: Run) -> None:
    """The AWS fan-out encodes segments in other invocations; the join reuses them."""
    rel = put_clip(make_clip(clips / "five-b.mp4", seconds=5))
    cfg = MountConfig.load(mount)
    path = mount / rel
    info = probe.probe(path, keyframes_every=2)
    assert info.video is not None
    rate = encode.output_rate(info.video, 60)
    plan = encode.VideoPlan(runner.media_url(path), info.video.index, f"{rate.numerator}/{rate.denominator}",
                            tuple(encode.ladder_for(info.video, (1080,))), 23, "veryfast", 0)
    segments = encode.plan_segments(info, rate, 2, info.keyframes)
    from shared.runs import run_id_for
    from workers.video_transcode import core

    options = parse({"segment_seconds": 2, "poster": False}).to_manifest()
    import hashlib

    run_id = run_id_for("video-transcode", SPEC.version, options, hashlib.sha256(path.read_bytes()).hexdigest())
    run_dir = cfg.worker_dir("video-transcode") / path.name / run_id
    run_dir.mkdir(parents=True)
    first = encode.encode_segment(plan, segments[0], run_dir)
    assert first.returncode == 0 and encode.segment_done(run_dir, segments[0], plan.rungs)
    marker_time = (run_dir / segments[0].done_marker).stat().st_mtime_ns
    calls: list[int] = []
    reused_markers: list[int] = []
    original = encode.encode_segment

    def spy(plan: Any, segment: Any, run_dir: Path, should_stop: Any = None, sharing: int = 1) -> Any:
        result = original(plan, segment, run_dir, should_stop, sharing)
        calls.append(-1 if result.cached else segment.index)
        if result.cached:
            reused_markers.append((run_dir / segment.done_marker).stat().st_mtime_ns)
        return result

    encode.encode_segment = spy
    try:
        outcome = run(rel, poster=False, segment_seconds=2)
    finally:
        encode.encode_segment = original
    assert outcome.status == "done", outcome.message
    assert -1 in calls and 0 not in calls  # segment 0 was not encoded again
    assert reused_markers == [marker_time]  # the reused segment's marker is the one written before the run
    assert ffprobe(outputs(mount, outcome)["240p.mp4"])["streams"][0]["nb_read_packets"] == "150"
    assert core.AUDIO_PART.startswith(encode.SEGMENTS_DIR)


# ----------------------------------------------------------------------- no ffprobe, CLI


def test_works_with_only_the_imageio_ffmpeg_binary(mount: Path, clips: Path, monkeypatch: pytest.MonkeyPatch,
                                                   put_clip: PutClip, run: Run) -> None:
    plain = make_clip(clips / "for-wheel.mp4", seconds=2)
    rotated = clips / "for-wheel-rot.mp4"
    ff("-display_rotation", "90", "-i", str(plain), "-c", "copy", str(rotated), exe=newer_ffmpeg())
    monkeypatch.setenv(runner.ENV_FFMPEG, newer_ffmpeg())
    monkeypatch.setenv(runner.ENV_FFPROBE, "")  # as on a machine with the wheel only
    runner.ffmpeg_exe.cache_clear()
    runner.ffprobe_exe.cache_clear()
    try:
        assert runner.ffprobe_exe() is None
        info = probe.probe(rotated)
        assert info.prober == "ffmpeg" and info.video is not None and info.audio is not None
        assert (info.video.width, info.video.height, info.video.rotation) == (320, 240, 270)
        assert abs(info.duration - 2.0) < 0.1 and info.video.frame_rate == 30.0
        assert info.audio.codec == "aac" and info.audio.channels == 1
        rel = put_clip(rotated)
        outcome = run(rel, segment_seconds=1)
    finally:
        runner.ffmpeg_exe.cache_clear()
        runner.ffprobe_exe.cache_clear()
    assert outcome.status == "done", outcome.message
    video, = streams(outputs(mount, outcome)["240p.mp4"], "video")
    assert (video["width"], video["height"]) == (240, 320) and not video.get("side_data_list")


def test_cli_run_and_verify_end_to_end(basic_clip: Path, put_clip: PutClip, cli: Cli) -> None:
    rel = put_clip(basic_clip, "clip.mp4")
    code, manifest = cli.run("video-transcode", rel, "ladder=480,240", "sprite=true")
    assert code == 0 and manifest["worker"] == "video-transcode"
    assert {o["path"].rsplit("/", 1)[-1] for o in manifest["outputs"]} == {
        "240p.mp4", "poster.jpg", "sprite.jpg", "sprite.vtt"}
    assert manifest["options"]["ladder"] == [480, 240]
    code, again = cli.run("video-transcode", rel, "ladder=480,240", "sprite=true")
    assert code == 0
    assert again["run_id"] == manifest["run_id"]  # already done
    assert cli("verify", "--root", str(cli.mount))[0] == 0
    assert cli.run("video-transcode", rel, "crf=99")[0] == 2


def test_registration_imports_no_media_library() -> None:
    """Cold start: importing the worker's package must not load ffmpeg-python or Pillow."""
    code = ("import sys, workers.video_transcode, workers.video_transcode.handler; "
            "print(sorted(m for m in ('ffmpeg', 'PIL', 'workers.video_transcode.core', '_hashlib', 'dataclasses') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip() == "[]"


def test_segments_are_cut_evenly_moving_only_to_a_keyframe_very_near() -> None:
    """The slowest segment is the fan-out's wall time: a keyframe 13 frames from the even
    split (1.4% of a segment) would make one segment 26 frames longer to encode, while
    cutting off it costs the next segment 13 frames of decoding only."""
    info = probe.MediaInfo("mov", 60.0, None, 0.0, None, None)
    keyframes = [t / 30 for t in (0, 60, 120, 887, 947, 1500, 1790)]
    segments = encode.plan_segments(info, Fraction(30), 30, keyframes)
    assert [(s.start, s.frames) for s in segments] == [(0, 900), (900, None)]
    near = encode.plan_segments(info, Fraction(30), 30, [*keyframes, 896 / 30])  # within 1%
    assert [(s.start, s.frames) for s in near] == [(0, 896), (896, None)]
    # no keyframe list (no ffprobe): cuts on the grid, every frame in exactly one segment
    grid = encode.plan_segments(info, Fraction(30), 1, None)
    assert [s.start for s in grid] == list(range(0, 1770, 30))  # the last one takes the final 2 s
    assert sum(s.frames or 1800 - s.start for s in grid) == 1800


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_keyframes_are_looked_up_near_the_cuts_only(clips: Path, container: str) -> None:
    """The probe reads packet headers of the first seconds (frame-rate regularity) and a
    window after each cut, in its one ffprobe run where the MP4 header gives the duration
    up front (one more small run otherwise); a whole-file scan would read every byte of a
    long video from the mount."""
    path = make_clip(clips / f"forty.{container}", seconds=40, audio=False)  # a keyframe every second
    info = probe.probe(path, keyframes_every=26)
    assert not info.video.variable_frame_rate  # type: ignore[union-attr]
    found = [round(t) for t in info.keyframes]
    assert found[:20] == list(range(20))  # the first 20 s
    assert 26 in found and {20, 21, 22, 23, 24, 25, 31, 35, 39}.isdisjoint(found)  # near the cut at 26 s only
    assert probe.probe(path).keyframes == ()  # not asked: not looked up


@pytest.mark.slow
def test_compliant_aac_is_copied_and_other_audio_is_encoded(mount: Path, clips: Path, put_clip: PutClip,
                                                            run: Run) -> None:
    source = put_clip(make_clip(clips / "aac-64k.mp4", extra=("-b:a", "64k")))
    src_audio, = streams(mount / source, "audio")
    copied = run(source, poster=False, ladder="240")
    assert copied.status == "done" and copied.record["facts"]["audio"] == "copied"  # type: ignore[index]
    out_audio, = streams(outputs(mount, copied)["240p.mp4"], "audio")
    assert out_audio["codec_name"] == "aac" and out_audio["bit_rate"] == src_audio["bit_rate"]  # packets as they were
    forced = run(source, poster=False, ladder="240", audio_copy=False)
    assert forced.record["facts"]["audio"] == "encoded"  # type: ignore[index]
    loud = put_clip(make_clip(clips / "aac-256k.mp4", extra=("-ac", "2", "-b:a", "256k")))
    over = run(loud, poster=False, ladder="240", audio_bitrate=96)
    assert over.record["facts"]["audio"] == "encoded"  # type: ignore[index]  # above the target bitrate
    out_audio, = streams(outputs(mount, over)["240p.mp4"], "audio")
    assert int(out_audio["bit_rate"]) < 110_000
    mp3 = put_clip(make_clip(clips / "mp3.mkv", extra=("-c:a", "libmp3lame")))
    encoded = run(mp3, poster=False, ladder="240")
    assert encoded.record["facts"]["audio"] == "encoded"  # type: ignore[index]
    out_audio, = streams(outputs(mount, encoded)["240p.mp4"], "audio")
    assert out_audio["codec_name"] == "aac"


def _gray_frame(path: Path, at: float, size: tuple[int, int]) -> bytes:
    """One decoded frame of ``path`` at ``at`` seconds (accurate seek), as 8-bit gray pixels."""
    return subprocess.run([str(FFMPEG), "-v", "error", "-ss", f"{at:.3f}", "-i", str(path), "-frames:v", "1",
                           "-vf", f"scale={size[0]}:{size[1]}", "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"],
                          check=True, capture_output=True).stdout


def test_poster_time_is_the_time_of_the_frame_it_shows(mount: Path, clips: Path, put_clip: PutClip, run: Run) -> None:
    from PIL import Image

    clip = make_clip(clips / "ten-seconds.mp4", seconds=10, rate=25, audio=False)
    outcome = run(put_clip(clip))
    assert outcome.status == "done", outcome.message
    poster = output_record(outcome, "poster.jpg")
    with Image.open(outputs(mount, outcome)["poster.jpg"]) as image:
        shown = image.convert("L").tobytes()
        size = image.size

    def distance(at: float) -> float:
        frame = _gray_frame(clip, at, size)
        return sum(abs(a - b) for a, b in zip(shown, frame, strict=True)) / len(shown)

    search_start = 10 * 0.1
    assert poster["time"] != search_start  # the thumbnail filter picked a later frame of its window
    assert distance(poster["time"]) < 3 < distance(search_start)  # the recorded time shows the poster's frame


def test_variable_frame_rate_becomes_the_nearest_standard_rate(mount: Path, clips: Path, put_clip: PutClip,
                                                               run: Run) -> None:
    vfr = clips / "vfr-20fps.mp4"  # an average of 20 fps: 2% or more from every standard rate
    ff("-f", "lavfi", "-i", "testsrc2=s=320x240:r=20:d=3", "-vf", r"settb=1/90000,setpts=N/20/TB+0.015*mod(N\,2)/TB",
       "-fps_mode", "passthrough", "-enc_time_base:v", "1/90000", "-c:v", "libx264", "-preset", "ultrafast",
       "-pix_fmt", "yuv420p", "-video_track_timescale", "90000", str(vfr))
    outcome = run(put_clip(vfr), poster=False)
    assert outcome.status == "done", outcome.message
    facts = outcome.record["facts"]  # type: ignore[index]
    assert facts["probe"]["video"]["variable_frame_rate"] is True
    assert facts["output_frame_rate"] == "24000/1001"
    out = outputs(mount, outcome)["240p.mp4"]
    pts = video_packet_times(out)
    deltas = {round(b - a, 3) for a, b in itertools.pairwise(pts)}
    assert deltas <= {round(1001 / 24000, 3), round(1001 / 24000, 3) + 0.001}  # constant, 23.976 fps
    assert abs(len(pts) - 3 * 24000 / 1001) <= 2  # frames duplicated by timestamp: the length is kept


# ------------------------------------------------------------------------ HDR sources


HDR_SOURCES = {"hlg": "arib-std-b67", "pq": "smpte2084"}  # every recent phone's video; HDR10


def _bars(clips: Path) -> Path:
    """Static colour bars (every frame the same), SDR BT.709: the reference an HDR copy of
    them must come back to."""
    path = clips / "bars-sdr.mp4"
    if not path.exists():
        ff("-f", "lavfi", "-i", "smptehdbars=s=320x180:r=25:d=1", "-c:v", "libx264", "-preset", "ultrafast",
           "-qp", "0", "-pix_fmt", "yuv444p", "-color_primaries", "bt709", "-color_trc", "bt709",
           "-colorspace", "bt709", str(path))
    return path


def _hdr_bars(clips: Path, transfer: str) -> Path:
    """The bars as a phone or an HDR10 master writes them: 10-bit HEVC, BT.2020, HLG or PQ."""
    path = clips / f"bars-{transfer}.mp4"
    if not path.exists():
        ff("-i", str(_bars(clips)), "-vf", f"zscale=tin=bt709:pin=bt709:min=bt709:t={transfer}:p=bt2020:m=bt2020nc:"
           "npl=100,format=yuv420p10le", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params",
           "log-level=error:crf=8", "-tag:v", "hvc1", "-color_primaries", "bt2020", "-color_trc", transfer,
           "-colorspace", "bt2020nc", str(path))
    return path


def _psnr(path: Path, reference: Path) -> float:
    lines = subprocess.run([str(FFMPEG), "-hide_banner", "-i", str(path), "-i", str(reference), "-lavfi",
                            "[0:v]format=yuv444p[a];[1:v]format=yuv444p[b];[a][b]psnr", "-f", "null", "-"],
                           capture_output=True, text=True, check=True).stderr
    return float(re.findall(r"average:([\d.]+|inf)", lines)[-1])


def _poster_difference(poster: Path, reference: Path) -> float:
    """Mean absolute difference per RGB channel (0-255) between the poster and the reference's first frame."""
    from PIL import Image, ImageChops, ImageStat

    frame = subprocess.run([str(FFMPEG), "-v", "error", "-i", str(reference), "-frames:v", "1", "-f", "image2pipe",
                            "-vcodec", "png", "pipe:1"], check=True, capture_output=True).stdout
    import io

    with Image.open(poster) as made, Image.open(io.BytesIO(frame)) as ref:
        diff = ImageChops.difference(made.convert("RGB"), ref.convert("RGB").resize(made.size))
        return float(sum(ImageStat.Stat(diff).mean) / 3)


@pytest.mark.skipif(not runner.has_filter("zscale"), reason="this ffmpeg has no zscale (libzimg) to make HDR clips")
@pytest.mark.parametrize(("kind", "lut"), [("hlg", True), ("pq", True), ("hlg", False)],
                         ids=["hlg", "pq", "hlg-float-chain"])
def test_hdr_sources_become_sdr_bt709_renditions_and_posters(kind: str, lut: bool, mount: Path, clips: Path,
                                                             put_clip: PutClip, run: Run,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """An HLG or PQ source played as SDR is washed out, and a JPEG of it always is: the
    renditions and the poster are tone-mapped to BT.709 and tagged so, through the 3D LUT or,
    where none can be made, ffmpeg's float chain. Measured against the SDR bars the HDR copy
    was made from: the tone-mapped rendition comes back at ~29 dB PSNR, the untouched one
    (option hdr=keep, the behaviour before) at 17-18 dB."""
    from workers.video_transcode import tonemap

    if not lut:
        monkeypatch.setattr(tonemap, "lut_file", lambda *args: None)
    transfer = HDR_SOURCES[kind]
    reference = _bars(clips)
    rel = put_clip(_hdr_bars(clips, transfer))
    made = run(rel)
    assert made.status == "done", made.message
    assert made.record["facts"]["hdr"] == {"transfer": transfer, "output": "sdr", "tone_curve": "mobius"}  # type: ignore[index]
    assert made.record["facts"]["probe"]["video"]["color_transfer"] == transfer  # type: ignore[index]
    rendition = outputs(mount, made)["180p.mp4"]
    video, = streams(rendition, "video")
    assert (video["color_transfer"], video["color_primaries"], video["color_space"]) == ("bt709", "bt709", "bt709")
    tone_mapped, tone_mapped_poster = _psnr(rendition, reference), _poster_difference(
        outputs(mount, made)["poster.jpg"], reference)

    kept = run(rel, hdr="keep")
    assert kept.status == "done", kept.message
    assert kept.record["facts"]["hdr"] == {"transfer": transfer, "output": "kept"}  # type: ignore[index]
    untouched = outputs(mount, kept)["180p.mp4"]
    video, = streams(untouched, "video")
    assert video["color_transfer"] == transfer  # an HDR-aware player still knows what it is
    untouched_psnr, untouched_poster = _psnr(untouched, reference), _poster_difference(
        outputs(mount, kept)["poster.jpg"], reference)
    # measured: 28.9 / 28.8 dB against 18.2 / 16.6; the poster 10.4 / 10.8 levels off against 47 / 53
    assert tone_mapped >= 24 and tone_mapped >= untouched_psnr + 8, (tone_mapped, untouched_psnr)
    assert tone_mapped_poster <= 14 and 3 * tone_mapped_poster <= untouched_poster, (tone_mapped_poster,
                                                                                      untouched_poster)


@pytest.mark.skipif(not runner.has_filter("zscale"), reason="this ffmpeg has no zscale (libzimg) to make HDR clips")
def test_an_ffmpeg_without_zscale_leaves_hdr_untouched_and_says_so(mount: Path, clips: Path, put_clip: PutClip,
                                                                   run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    rel = put_clip(_hdr_bars(clips, HDR_SOURCES["hlg"]))
    monkeypatch.setattr(runner, "has_filter", lambda name: name != "zscale")
    outcome = run(rel, poster=False)
    assert outcome.status == "done", outcome.message
    assert outcome.record["facts"]["hdr"] == {"transfer": "arib-std-b67", "output": "untouched"}  # type: ignore[index]


def test_the_ffmpeg_probe_reads_an_hdr_stream_s_colours() -> None:
    """Without ffprobe (the imageio-ffmpeg wheel alone) the colours come from ffmpeg's stream line."""
    line = ("  Stream #0:0[0x1](und): Video: hevc (Main 10) (hvc1 / 0x31637668), yuv420p10le(tv, bt2020nc/bt2020/"
            "arib-std-b67), 1920x1080, 9861 kb/s, 29.97 fps, 29.97 tbr, 600 tbn (default)")
    match = probe._COLOR.search(line)
    assert match is not None
    assert (match["space"], match["primaries"], match["transfer"]) == ("bt2020nc", "bt2020", "arib-std-b67")
    assert probe._COLOR.search("Stream #0:0: Video: h264, yuv420p(tv, bt709), 320x240") is None  # SDR: one name
