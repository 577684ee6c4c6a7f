"""ffmpeg command lines: the rendition ladder, single pass and per segment, audio, join.

Everything here builds argv lists with ffmpeg-python (never a shell string) and runs
them with :mod:`.runner`, with the run directory as the working directory and fixed,
safe output names: an input named ``-x "q".mp4`` or a run path holding ``%`` (an image
or HLS pattern character) never reaches ffmpeg as anything but a ``file:`` URL.

Timing model, shared by single pass and segments so that both give the same frames:
the video is resampled to a constant rate ``R`` on a grid that starts at the file's
start (``fps=R:start_time=0``); a segment is a range of that grid ``[m, m + k)``,
read with an accurate seek to half a frame before slot ``m`` and shifted back by that
half frame, then cut to exactly ``k`` frames with ``trim``.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import ffmpeg

from workers.video_transcode import runner, tonemap
from workers.video_transcode.probe import AudioStream, MediaInfo, VideoStream

STANDARD_RATES = tuple(Fraction(r) for r in ("24000/1001", "24", "25", "30000/1001", "30", "48", "50",
                                             "60000/1001", "60"))
KEYFRAME_SECONDS = 2  # forced keyframe interval: HLS segments and seeks land on it
SNAP_FRACTION = 0.01  # a segment cut moves to a keyframe at most this fraction of a segment away
COPYABLE_AUDIO_RATES = (44100, 48000)
SEGMENTS_DIR = "segments"


def even(value: float) -> int:
    return max(2, 2 * round(value / 2))


@dataclass(frozen=True)
class Rung:
    """One rendition: its label (short-side height) and exact output size."""

    label: int
    width: int
    height: int

    @property
    def name(self) -> str:
        return f"{self.label}p.mp4"


def ladder_for(video: VideoStream, ladder: Sequence[int]) -> list[Rung]:
    """The renditions for this source: rungs above its size collapse into one at its size."""
    disp_w, disp_h = video.display_size
    short = min(disp_w, disp_h)
    labels = sorted({min(r, short) for r in ladder}, reverse=True)
    cap_w, cap_h = max(2, disp_w // 2 * 2), max(2, disp_h // 2 * 2)  # even, never above the source
    rungs = []
    for label in labels:
        scale = label / short
        width, height = min(even(disp_w * scale), cap_w), min(even(disp_h * scale), cap_h)
        rungs.append(Rung(min(width, height), width, height))
    return list(dict.fromkeys(rungs))


def output_rate(video: VideoStream, max_fps: float) -> Fraction:
    """The constant output frame rate, capped at ``max_fps``: a constant-rate source keeps
    its own; a variable-rate one gets the standard rate nearest its average (a 20.69 fps
    phone clip plays at 23.976), which every player and editor handles; the ``fps`` filter
    duplicates or drops frames by timestamp, so the audio stays in sync."""
    rate = Fraction(video.frame_rate_exact)
    if video.variable_frame_rate:
        rate = min(STANDARD_RATES, key=lambda s: abs(rate - s))
    else:
        rate = rate.limit_denominator(1001)
    cap = Fraction(max_fps).limit_denominator(1001)
    return min(rate, cap)


def seconds(value: Fraction) -> str:
    return f"{float(value):.6f}"


@dataclass(frozen=True)
class VideoPlan:
    """Everything that decides the video frames, shared by single pass and segments."""

    source: str  # file: URL of the input
    stream: int
    rate: str  # "30000/1001"
    rungs: tuple[Rung, ...]
    crf: int
    preset: str
    threads: int
    deinterlace: bool = False  # an interlaced source: fields made frames (bwdif) before anything else
    tonemap: str | None = None  # an HDR source's transfer (smpte2084, arib-std-b67): made SDR BT.709 (to_sdr)
    source_primaries: str = "bt2020"  # and its primaries and YUV matrix, which the tone-mapping reads from
    source_matrix: str = "bt2020nc"

    @property
    def fps(self) -> Fraction:
        return Fraction(self.rate)


def video_codec_args(plan: VideoPlan) -> dict[str, Any]:
    args: dict[str, Any] = {
        "c:v": "libx264", "preset": plan.preset, "crf": plan.crf, "pix_fmt": "yuv420p",
        "profile:v": "high", "force_key_frames": f"expr:gte(t,n_forced*{KEYFRAME_SECONDS})",
        "map_metadata": -1, "map_chapters": -1, "sn": None, "dn": None,
    }
    if plan.tonemap:  # the stream says what it now is: SDR BT.709
        args.update(color_primaries="bt709", color_trc="bt709", colorspace="bt709")
    if plan.threads:
        args["threads"] = plan.threads
    return args


def to_sdr(stream: Any, plan: VideoPlan) -> Any:
    """An HDR picture (PQ or HLG, BT.2020) as SDR BT.709 YUV, for players and JPEGs that know
    no HDR: played as HDR without it, an HLG or PQ picture shows washed out, and a JPEG of it
    always does. Through the 3D LUT made from :func:`~workers.video_transcode.tonemap.steps`
    (about half their cost), or through those filters where no LUT can be made. A no-op for
    an SDR plan."""
    if plan.tonemap is None:
        return stream
    lut = tonemap.lut_file(plan.tonemap, plan.source_primaries, plan.source_matrix)
    if lut is not None:
        return (stream.filter("scale", in_color_matrix="bt2020").filter("format", "gbrp16le")
                .filter("lut3d", file=str(lut), interp="tetrahedral")
                .filter("scale", out_color_matrix="bt709", out_range="tv").filter("format", "yuv420p"))
    for name, args in tonemap.steps(plan.tonemap, plan.source_primaries, plan.source_matrix):
        stream = stream.filter(name, **args)
    return stream.filter("zscale", m="bt709", r="tv").filter("format", "yuv420p")


def _video_graph(plan: VideoPlan, inp: Any, *, start_frame: int | None, frames: int | None) -> list[Any]:
    """The filter chain up to one stream per rung (autorotation happens before it)."""
    stream = inp[str(plan.stream)]
    if plan.deinterlace:  # one frame per frame, only those flagged interlaced: scaling fields would comb
        stream = stream.filter("bwdif", mode="send_frame", parity="auto", deint="interlaced")
    if start_frame is not None:
        stream = stream.filter("setpts", f"PTS-{seconds(1 / (2 * plan.fps))}/TB")
    stream = stream.filter("fps", fps=plan.rate, start_time=0)
    if frames is not None:
        stream = stream.filter("trim", end_frame=frames)
    if plan.tonemap:  # tone-mapped once, at the top rung's size (float RGB costs per pixel), before the split
        top = plan.rungs[0]
        stream = to_sdr(stream.filter("scale", top.width, top.height, flags="bicubic"), plan)
    branches = stream.filter_multi_output("split", len(plan.rungs)) if len(plan.rungs) > 1 else None
    out = []
    for i, rung in enumerate(plan.rungs):
        branch = branches[i] if branches is not None else stream
        out.append(branch.filter("scale", rung.width, rung.height, flags="bicubic")
                   .filter("setsar", 1).filter("format", "yuv420p"))
    return out


def _global(cmd: Any, threads: int) -> list[str]:
    args = ["-hide_banner", "-nostdin", "-nostats", "-progress", "pipe:1", "-loglevel", "warning"]
    if threads:
        args += ["-filter_threads", str(threads), "-filter_complex_threads", str(threads)]
    argv: list[str] = cmd.global_args(*args).overwrite_output().compile(cmd=runner.ffmpeg_exe())
    return argv


def input_args(plan_threads: int, **kwargs: Any) -> dict[str, Any]:
    if plan_threads:
        kwargs["threads"] = plan_threads
    return kwargs


def audio_copyable(audio: AudioStream, audio_kbps: int) -> bool:
    """Audio that already is what we would make (AAC-LC, mono or stereo, 44.1/48 kHz, at or
    under the target bitrate) is copied, not encoded again: no generation loss, and the AAC
    encoder's CPU (~10% of a 1-thread 720p encode) is saved."""
    return (audio.codec == "aac" and (audio.profile or "").upper() == "LC" and audio.channels in (1, 2)
            and audio.sample_rate in COPYABLE_AUDIO_RATES and audio.bitrate is not None
            and audio.bitrate <= audio_kbps * 1000)


def audio_codec_args(audio_kbps: int, copy: bool) -> dict[str, Any]:
    return {"c:a": "copy"} if copy else {"c:a": "aac", "b:a": f"{audio_kbps}k"}


def single_pass_argv(plan: VideoPlan, audio_stream: int | None, audio_kbps: int, *,
                     copy_audio: bool = False) -> list[str]:
    """One ffmpeg run: every rung, each with its own AAC track, straight to the final MP4s."""
    inp = ffmpeg.input(plan.source, **input_args(plan.threads))
    outputs = []
    for rung, video in zip(plan.rungs, _video_graph(plan, inp, start_frame=None, frames=None), strict=True):
        streams = [video] if audio_stream is None else [video, inp[str(audio_stream)]]
        kwargs = {**video_codec_args(plan), "movflags": "+faststart"}
        if audio_stream is not None:
            kwargs.update(audio_codec_args(audio_kbps, copy_audio))
        outputs.append(ffmpeg.output(*streams, runner.media_url(Path(rung.name)), **kwargs))
    return _global(ffmpeg.merge_outputs(*outputs), plan.threads)


# --------------------------------------------------------------------- segments


@dataclass(frozen=True)
class Segment:
    """Frames ``[start, start + frames)`` of the output grid; ``frames`` None: to the end."""

    index: int
    start: int
    frames: int | None

    def path(self, rung: Rung) -> str:
        return f"{SEGMENTS_DIR}/{rung.label}p/{self.index:05d}.mp4"

    @property
    def done_marker(self) -> str:
        return f"{SEGMENTS_DIR}/{self.index:05d}.done.json"


def plan_segments(info: MediaInfo, rate: Fraction, segment_seconds: int,
                  keyframes: Sequence[float] | None) -> list[Segment]:
    """Cut the output grid evenly every ``segment_seconds``; a cut moves to a keyframe only
    when one lies within SNAP_FRACTION of a segment of it.

    Cuts need not be on keyframes to be exact: a segment decodes from the keyframe before
    its start and drops what precedes it, a few frames at decoding speed. Moving a cut to a
    keyframe further away would instead make one segment longer by frames it must *encode*
    (several times the cost), and the slowest segment is the fan-out's wall time. Only
    keyframes near the cuts are needed (``probe(..., keyframes_every=segment_seconds)``).
    """
    total = int(info.duration * rate)
    step = max(1, int(segment_seconds * rate))
    snap = max(1, int(step * SNAP_FRACTION))
    tail = max(1, int(rate))  # never leave a last segment shorter than a second
    candidates = sorted({round((t - info.start_time) * rate) for t in keyframes or ()})
    cuts = [0]
    for target in range(step, total - tail, step):
        near = [f for f in candidates if abs(f - target) <= snap and cuts[-1] < f < total - tail]
        cuts.append(min(near, key=lambda f: (abs(f - target), f)) if near else target)
    segments = [Segment(i, start, nxt - start) for i, (start, nxt) in enumerate(itertools.pairwise(cuts))]
    segments.append(Segment(len(cuts) - 1, cuts[-1], None))
    return segments


def segment_argv(plan: VideoPlan, segment: Segment) -> list[str]:
    """Video only, every rung, for one segment (audio is encoded once, for the whole file)."""
    kwargs = input_args(plan.threads)
    if segment.start:
        kwargs["ss"] = seconds((segment.start - Fraction(1, 2)) / plan.fps)
    inp = ffmpeg.input(plan.source, **kwargs)
    videos = _video_graph(plan, inp, start_frame=segment.start or None, frames=segment.frames)
    outputs = [ffmpeg.output(video, runner.media_url(Path(segment.path(rung))), **video_codec_args(plan), an=None)
               for rung, video in zip(plan.rungs, videos, strict=True)]
    return _global(ffmpeg.merge_outputs(*outputs), plan.threads)


def audio_argv(source: str, audio_stream: int, audio_kbps: int, target: str, threads: int = 0, *,
               copy: bool = False) -> list[str]:
    inp = ffmpeg.input(source, **input_args(threads))
    out = ffmpeg.output(inp[str(audio_stream)], runner.media_url(Path(target)), **{
        **audio_codec_args(audio_kbps, copy), "vn": None, "sn": None, "dn": None,
        "map_metadata": -1, "movflags": "+faststart"})
    return _global(out, threads)


def join_argv(rung: Rung, segments: Sequence[Segment], audio: tuple[str, str] | None, run_dir: Path) -> list[str]:
    """Concatenate one rung's segments without re-encoding and mux the audio in.

    ``audio``: (URL, stream specifier) of the audio to copy: the encoded audio part, or
    the source's own track when it is copied as it is.
    """
    listing = Path(SEGMENTS_DIR) / f"{rung.label}p" / "list.txt"
    (run_dir / listing).write_text("ffconcat version 1.0\n" + "".join(
        f"file '{Path(s.path(rung)).name}'\n" for s in segments))
    video = ffmpeg.input(runner.media_url(listing), f="concat")
    streams = [video["v:0"]]
    if audio is not None:
        streams.append(ffmpeg.input(audio[0])[audio[1]])
    out = ffmpeg.output(*streams, runner.media_url(Path(rung.name)), c="copy", movflags="+faststart",
                        map_metadata=-1)
    return _global(out, 0)


def write_done_marker(run_dir: Path, segment: Segment, facts: dict[str, Any]) -> None:
    """Record a finished segment (its files are complete); written after they are closed."""
    write_marker(run_dir / segment.done_marker, {"segment": asdict(segment), **facts})


def write_marker(path: Path, record: dict[str, Any]) -> None:
    data = json.dumps(record).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def segment_done(run_dir: Path, segment: Segment, rungs: Sequence[Rung]) -> bool:
    marker = run_dir / segment.done_marker
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return record.get("segment") == asdict(segment) and all((run_dir / segment.path(r)).is_file() for r in rungs)


def encode_segment(plan: VideoPlan, segment: Segment, run_dir: Path,
                   should_stop: Callable[[], bool] | None = None, sharing: int = 1) -> runner.Result:
    """One unit of work: this segment of every rung, then its done marker. Idempotent.
    ``sharing``: the ffmpeg processes run at once here, sharing the memory (runner.run)."""
    if segment_done(run_dir, segment, plan.rungs):
        return runner.Result([], 0, b"", cached=True)
    for rung in plan.rungs:
        (run_dir / segment.path(rung)).parent.mkdir(parents=True, exist_ok=True)
    result = runner.run(segment_argv(plan, segment), label=f"segment {segment.index}", cwd=run_dir,
                        should_stop=should_stop, sharing=sharing)
    if result.returncode == 0:
        write_done_marker(run_dir, segment, {"frames": result.progress.get("frame")})
    return result
