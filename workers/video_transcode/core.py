"""The video worker's processing, and the one place ffmpeg failures become our errors.

    probe -> limits/encryption -> renditions (single pass, or segments + audio -> join)
          -> poster -> sprite + WebVTT -> HLS -> facts for the manifest

ffmpeg runs as a child process (argv lists, ``file:`` URLs, the run directory as its
working directory); :mod:`.runner` streams its stderr and kills it at the deadline.
Translation, most specific first: a stopped run is :class:`DeadlineReached`
(retryable, nothing committed); unreadable input is Corrupt/Unsupported/Encrypted;
an ffmpeg refusal of *our* arguments is a bug and is raised as such.
"""

from __future__ import annotations

import math
import re
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from fractions import Fraction
from pathlib import Path
from typing import Any

import ffmpeg

from shared import config
from shared import observability as obs
from shared.errors import (
    EMPTY_INPUT,
    UNSUPPORTED_CODEC,
    CorruptInput,
    DeadlineReached,
    EncryptedInput,
    LimitExceeded,
    RetryableError,
    UnsupportedInput,
    environment_fault_in_text,
    out_of_space,
)
from shared.runs import OutputDir
from shared.worker import InputFile, RunContext
from workers.video_transcode import encode, is_media, probe, runner, tonemap
from workers.video_transcode.encode import Rung, Segment, VideoPlan
from workers.video_transcode.options import Options
from workers.video_transcode.probe import MediaInfo
from workers.video_transcode.sniff import SNIFF_BYTES

STOP_MARGIN_SECONDS = 10.0  # ffmpeg is killed this long before the invocation's deadline
POSTER_POSITIONS = (0.1, 0.4, 0.7)  # fractions of the duration where a poster is looked for
POSTER_WINDOW_FRAMES = 50  # frames the thumbnail filter compares at each position
DARK_LUMA = 28.0  # mean luma (0-255) under which a poster candidate counts as black
POSTER_TAG = "mountworks.poster"  # frame metadata the poster graph prints for the frame it picked
SPRITE_WIDTH = 160
SPRITE_COLUMNS = 10
MAX_SPRITE_THUMBS = 100
MAX_DECODE_ERROR_RATIO = 0.1  # more decode errors than this per written frame: corrupt input
_OUR_FAULT = ("unrecognized option", "option not found", "error parsing", "invalid argument",
              "error initializing filter", "no such filter", "unknown encoder", "error setting option")
# ffmpeg's words once it is past the command and into the data (besides its decoding errors,
# which runner counts): a failure after them is the input's, however it is worded (damaged AAC
# that decodes to 31 channels ends the filter graph with "... filter network: Invalid argument")
_INTO_THE_DATA = ("error while processing the decoded data", "error reinitializing filters",
                  "failed to inject frame into filter network")
# With a damaged bitstream, a feature "not implemented" is random bits read as a feature
# (damaged AAC "uses" gain control), not a codec to re-encode from
_DAMAGED = (*runner.BITSTREAM_DAMAGE_MARKERS, "invalid data found", "error while decoding mb")

MEDIA_TYPES = {".mp4": "video/mp4", ".m4a": "audio/mp4", ".jpg": "image/jpeg", ".vtt": "text/vtt",
               ".m3u8": "application/vnd.apple.mpegurl", ".m4s": "video/iso.segment"}


class Stopper:
    """Tells ffmpeg runs to stop: near the deadline, or when a sibling segment failed."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.failed = threading.Event()

    def __call__(self) -> bool:
        left = self.ctx.deadline.remaining()
        return self.failed.is_set() or (left is not None and left < STOP_MARGIN_SECONDS)

    def check(self, doing: str) -> None:
        self.ctx.deadline.check(STOP_MARGIN_SECONDS, doing=doing)


# ------------------------------------------------------------------ error boundary


# ffmpeg's words for "this codec, or this feature of it, has no decoder here" (xHE-AAC is
# "Audio object type 42 is not implemented" on ffmpeg 5/6)
_NO_DECODER = ("is not implemented", "not yet implemented", "unsupported codec", "codec not currently supported",
               "is not supported")


def _lacks_decoder(text: str) -> bool:
    return any(marker in text for marker in _NO_DECODER) or ("decoder" in text and "not found" in text)


def unsupported_codec(what: str, lines: list[str]) -> UnsupportedInput:
    return UnsupportedInput(f"{what}: ffmpeg has no decoder for a codec (or codec feature) of this file; "
                            f"re-encode it or use a newer ffmpeg: {_describe(lines)}", code=UNSUPPORTED_CODEC)


def _describe(lines: list[str]) -> str:
    return " | ".join(lines) if lines else "no diagnostic from ffmpeg"


def classify_probe_failure(exc: probe.ProbeFailed, head: bytes) -> Exception:
    """Unreadable input: damaged media (it starts like media) or not media at all."""
    text = " ".join(exc.lines).lower()
    detail = _describe(exc.lines)
    if not is_media(head) and ("invalid data found" in text or "moov atom not found" in text):
        # ffmpeg picks its demuxer from the extension: a text file named .mp4 "lacks a moov atom"
        return UnsupportedInput(f"not an audio or video file (its first bytes match no media container): {detail}")
    if "moov atom not found" in text:
        return CorruptInput(f"truncated or unfinished MP4/MOV (its index, the moov atom, is missing): {detail}")
    if "invalid data found" in text:
        return UnsupportedInput(f"not an audio or video file ffmpeg can read: {detail}")
    if "encrypt" in text or "decryption" in text:
        return EncryptedInput(f"the media is encrypted: {detail}")
    if _lacks_decoder(text):
        return unsupported_codec("probe", exc.lines)
    return CorruptInput(f"ffmpeg could not read the file: {detail}")


def check_result(result: runner.Result, what: str, *, expect_frames: bool) -> None:
    """Raise the classified error for a failed or garbage-producing ffmpeg run."""
    if result.cached:
        return
    if result.memory_limit_mb is not None:
        raise LimitExceeded(f"{what}: ffmpeg needed more than the {result.memory_limit_mb:,.0f} MB it may use "
                            "(its share of the function's memory); give the function more memory (MemorySize), "
                            "or lower the ladder or max_pixels", limit="memory")
    lines = probe.relevant_lines(result.stderr_lines)
    text = " ".join(result.stderr_lines).lower()
    if result.returncode != 0:
        fault = environment_fault_in_text(result.stderr_lines, doing=what)
        if fault is not None:  # "No space left on device" writing an output: the disk's, not the input's
            raise fault
        into_the_data = result.decode_errors > 0 or any(marker in text for marker in _INTO_THE_DATA)
        if any(marker in text for marker in _OUR_FAULT) and not into_the_data:
            raise RuntimeError(f"ffmpeg refused the {what} command (a bug in mountworks): {_describe(lines)}")
        if "encrypt" in text:
            raise EncryptedInput(f"{what}: the media is encrypted: {_describe(lines)}")
        if _lacks_decoder(text) and not any(marker in text for marker in _DAMAGED):
            raise unsupported_codec(what, lines)
        if "unsupported channel layout" in text:  # valid audio (a 31-channel WAV) that AAC cannot carry
            raise UnsupportedInput(f"{what}: the audio's channel layout cannot be encoded to AAC (at most 8 "
                                   f"channels, in a known layout); downmix it first: {_describe(lines)}")
        raise CorruptInput(f"{what} failed, the input looks damaged: {_describe(lines)}")
    if expect_frames and result.progress and result.frames == 0:
        raise CorruptInput(f"{what}: not a single video frame could be decoded: {_describe(lines)}")
    if expect_frames and result.decode_errors > max(10, result.frames * MAX_DECODE_ERROR_RATIO):
        raise CorruptInput(f"{what}: {result.decode_errors} decoding errors over {result.frames} frames "
                           f"(damaged or encrypted stream): {_describe(lines)}")


def run_checked(argv: list[str], what: str, stop: Stopper, *, cwd: Path, expect_frames: bool) -> runner.Result:
    try:
        result = runner.run(argv, label=what, cwd=cwd, should_stop=stop)
    except runner.Stopped as exc:
        raise DeadlineReached(f"stopped ffmpeg ({what}): the invocation's time is nearly up; "
                              "nothing was committed, try again with more time or segment_seconds") from exc
    check_result(result, what, expect_frames=expect_frames)
    return result


def inspect(path: Path, options: Options) -> MediaInfo:
    """Probe the input and refuse what we must not transcode, with a classified error."""
    if path.stat().st_size == 0:
        raise CorruptInput("the file is empty (0 bytes)", code=EMPTY_INPUT)
    try:
        info = probe.probe(path, keyframes_every=options.segment_seconds)
    except probe.ProbeFailed as exc:
        with path.open("rb") as f:
            head = f.read(SNIFF_BYTES)
        raise classify_probe_failure(exc, head) from exc
    if info.encrypted:
        raise EncryptedInput("the media is encrypted (Common Encryption boxes such as encv/enca/tenc/pssh); "
                             "it cannot be transcoded without its key")
    if info.video is None and info.audio is None:
        raise CorruptInput(f"no audio or video stream found in this {info.container} file "
                           f"(streams: {[s.get('type') for s in info.streams]})")
    if info.duration > options.max_duration:
        raise LimitExceeded(f"duration {info.duration:.0f}s is over max_duration={options.max_duration:.0f}s",
                            limit="max_duration")
    if info.video is not None:
        if info.video.width <= 0 or info.video.height <= 0:
            raise CorruptInput("the video stream has no picture size (damaged header)")
        if info.video.width * info.video.height > options.max_pixels:
            raise LimitExceeded(f"{info.video.width}x{info.video.height} is over max_pixels={options.max_pixels}",
                                limit="max_pixels")
    return info


# ------------------------------------------------------------------------ process


def process(source: InputFile, out: OutputDir, options: Options, ctx: RunContext) -> dict[str, Any]:
    """Renditions, poster, optional sprite and HLS into ``out``; probe facts for the manifest.

    A stop (the deadline) removes the outputs written so far on the way out: an unplayable
    half-written MP4 must not sit in the run directory until a retry (outputs are written at
    their final names, never renamed). Segments stay, under ``segments/``, for the retry.
    """
    try:
        return _process(source, out, options, ctx)
    except RetryableError:
        discard_outputs(out)
        raise


UNDECLARED_WHILE_WRITTEN = ("poster.jpg", "hls")  # ffmpeg writes these before they are declared


def discard_outputs(out: OutputDir) -> None:
    for name in {*(o.name for o in out.outputs), *UNDECLARED_WHILE_WRITTEN}:
        path = out.run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _process(source: InputFile, out: OutputDir, options: Options, ctx: RunContext) -> dict[str, Any]:
    stop = Stopper(ctx)
    info = inspect(source.path, options)
    facts: dict[str, Any] = {"probe": info.facts()}
    src = runner.media_url(source.path)
    copy_audio = copies_audio(info, options)
    facts["audio"] = "copied" if copy_audio else ("encoded" if info.audio is not None else "none")
    if info.video is None:
        assert info.audio is not None
        stop.check("before encoding audio")
        out.path("audio.m4a", "audio/mp4")
        run_checked(encode.audio_argv(src, info.audio.index, options.audio_bitrate, "audio.m4a", options.threads,
                                      copy=copy_audio),
                    "audio encode", stop, cwd=out.run_dir, expect_frames=False)
        made = output_facts(out.run_dir / "audio.m4a")
        if made.get("audio_codec") is None or made["duration"] <= 0:  # a WAV header with no samples
            raise CorruptInput(f"the {info.container} file holds no audio samples (its duration is 0)",
                               code=EMPTY_INPUT)
        out.update_facts("audio.m4a", **made)
        facts["mode"] = "audio-only"
        return facts

    plan = video_plan(source.path, info, options)
    audio = info.audio.index if info.audio is not None else None
    stop.check("before encoding video")
    for rung in plan.rungs:
        out.path(rung.name, "video/mp4", rendition=f"{rung.label}p")
    if uses_segments(info, options):
        facts["segments"] = encode_segmented(info, plan, audio, copy_audio, options, out.run_dir, stop)
        facts["mode"] = "segment-parallel"
    else:
        run_checked(encode.single_pass_argv(plan, audio, options.audio_bitrate, copy_audio=copy_audio),
                    "transcode", stop, cwd=out.run_dir, expect_frames=True)
        facts["mode"] = "single-pass"
    facts["output_frame_rate"] = plan.rate
    facts["deinterlaced"] = plan.deinterlace
    if (hdr := hdr_output(info.video, options)) is not None:
        facts["hdr"] = {"transfer": info.video.color_transfer, "output": hdr,
                        **({"tone_curve": tonemap.CURVE} if hdr == "sdr" else {})}
    for rung in plan.rungs:
        out.update_facts(rung.name, **output_facts(out.run_dir / rung.name))
    top = plan.rungs[0]
    if options.poster:
        stop.check("before the poster")
        make_poster(plan, info, top, out, stop)
    if options.sprite:
        stop.check("before the sprite")
        make_sprite(plan, info, out, options, stop)
    if options.hls:
        stop.check("before HLS packaging")
        package_hls(plan, out, options, stop)
    return facts


def video_plan(path: Path, info: MediaInfo, options: Options) -> VideoPlan:
    """The frame-deciding settings, identical wherever a segment of this input is encoded."""
    assert info.video is not None
    rate = encode.output_rate(info.video, options.max_fps)
    video = info.video
    return VideoPlan(runner.media_url(path), video.index, f"{rate.numerator}/{rate.denominator}",
                     tuple(encode.ladder_for(video, options.ladder)), options.crf, options.preset,
                     options.threads, deinterlace=video.interlaced,
                     tonemap=video.color_transfer if hdr_output(video, options) == "sdr" else None,
                     source_primaries=video.color_primaries or "bt2020", source_matrix=video.color_space or "bt2020nc")


def hdr_output(video: probe.VideoStream, options: Options) -> str | None:
    """What an HDR source becomes: ``sdr`` (tone-mapped, option ``hdr=sdr``, the default),
    ``kept`` (option ``hdr=keep``: 8-bit H.264 carrying the source's HLG or PQ tags, for
    HDR-aware players) or ``untouched`` (this ffmpeg lacks the zscale filter); None for SDR."""
    if not video.hdr:
        return None
    if options.hdr == "keep":
        return "kept"
    return "sdr" if runner.has_filter("zscale") and runner.has_filter("tonemap") else "untouched"


def copies_audio(info: MediaInfo, options: Options) -> bool:
    """Whether the source's audio goes into the outputs as it is (see encode.audio_copyable)."""
    return options.audio_copy and info.audio is not None and encode.audio_copyable(info.audio, options.audio_bitrate)


def uses_segments(info: MediaInfo, options: Options) -> bool:
    return bool(options.segment_seconds) and info.video is not None and (
        info.duration >= 1.5 * options.segment_seconds)


def require_output(path: Path, what: str) -> None:
    """ffmpeg can exit 0 having written nothing (no frame decoded): that is a damaged input,
    unless the disk is full (then ffmpeg exits 0 too, with an empty or torn output)."""
    if not path.is_file() or path.stat().st_size == 0:
        fault = out_of_space(path.parent, doing=f"writing {what}")
        if fault is not None:
            raise fault
        raise CorruptInput(f"{what}: ffmpeg wrote nothing (no frame could be decoded from the input)")


def output_facts(path: Path) -> dict[str, Any]:
    """What the manifest says about one output MP4/M4A (from probing it)."""
    require_output(path, path.name)
    try:
        info = probe.probe(path, measure_vfr=False)
    except probe.ProbeFailed as exc:  # our own output is unreadable: torn by a full disk?
        fault = out_of_space(path.parent, doing=f"writing {path.name}")
        if fault is not None:
            raise fault from exc
        raise
    facts: dict[str, Any] = {"duration": round(info.duration, 3), "bitrate": info.bitrate}
    if info.video is not None:
        facts.update(width=info.video.width, height=info.video.height, video_codec=info.video.codec,
                     frame_rate=info.video.frame_rate, frames=info.video.frames, pix_fmt=info.video.pix_fmt,
                     level=info.video.level)
    if info.audio is not None:
        facts.update(audio_codec=info.audio.codec, channels=info.audio.channels,
                     sample_rate=info.audio.sample_rate)
    return facts


# ------------------------------------------------------------------ segment-parallel


def plan_segments(info: MediaInfo, plan: VideoPlan, options: Options) -> list[Segment]:
    """The segments of this input (the same wherever they are planned)."""
    return encode.plan_segments(info, plan.fps, options.segment_seconds, info.keyframes)


def local_jobs() -> int:
    return config.video_jobs()


def encode_segmented(info: MediaInfo, plan: VideoPlan, audio: int | None, copy_audio: bool, options: Options,
                     run_dir: Path, stop: Stopper) -> dict[str, Any]:
    """Split, encode segments (and the audio, once, unless it is copied) in parallel, join, clean up.

    Each segment is an independent unit (its own files and done marker under the run
    directory), so a remote fan-out may have produced some already: those are reused.
    """
    started = time.monotonic()
    segments = plan_segments(info, plan, options)
    planned = time.monotonic()
    jobs = local_jobs()
    obs.logger.info("segment-parallel encode", extra={"segments": len(segments), "jobs": jobs})
    took: dict[int, float] = {}

    sharing = jobs + 1  # the segments at once, and the audio encode beside them

    def timed(segment: Segment) -> bool:
        begun = time.monotonic()
        cached = encode_one(plan, segment, run_dir, stop, sharing)
        took[segment.index] = round(time.monotonic() - begun, 3)
        return cached

    # The audio encode is light (a few % of the video's CPU): it runs beside the segments,
    # as it would in its own invocation, instead of taking one of the ``jobs`` slots.
    with ThreadPoolExecutor(max_workers=jobs) as pool, ThreadPoolExecutor(max_workers=1) as side:
        futures = []
        encode_audio = audio is not None and not copy_audio
        if audio is not None and encode_audio:
            futures.append(side.submit(_encode_audio, plan.source, audio, options, run_dir, stop, sharing))
        futures += [pool.submit(timed, segment) for segment in segments]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.exception() for f in done if f.done()):
            stop.failed.set()
        wait(futures)
    errors = [f.exception() for f in futures if f.exception() is not None]
    reused = sum(1 for f in futures[-len(segments):] if f.exception() is None and f.result())
    audio_reused = encode_audio and futures[0].exception() is None and futures[0].result()
    deadline = next((e for e in errors if isinstance(e, DeadlineReached)), None)
    if errors:
        raise next((e for e in errors if not isinstance(e, DeadlineReached)), deadline)  # type: ignore[misc]
    stop.check("before joining segments")
    encoded = time.monotonic()
    joined_audio = None
    if audio is not None:
        joined_audio = (plan.source, str(audio)) if copy_audio else (runner.media_url(Path(AUDIO_PART)), "a:0")
    for rung in plan.rungs:
        run_checked(encode.join_argv(rung, segments, joined_audio, run_dir),
                    f"join {rung.label}p", stop, cwd=run_dir, expect_frames=False)
    shutil.rmtree(run_dir / encode.SEGMENTS_DIR, ignore_errors=True)
    return {"count": len(segments), "starts": [s.start for s in segments], "jobs": jobs, "reused": reused,
            "audio_reused": audio_reused,
            "seconds": {"split": round(planned - started, 3), "encode": round(encoded - planned, 3),
                        "join": round(time.monotonic() - encoded, 3),
                        "per_segment": [took.get(s.index) for s in segments]}}


AUDIO_PART = f"{encode.SEGMENTS_DIR}/audio.m4a"
AUDIO_DONE = f"{encode.SEGMENTS_DIR}/audio.done.json"


def encode_one(plan: VideoPlan, segment: Segment, run_dir: Path, stop: Callable[[], bool], sharing: int = 1) -> bool:
    """Encode one segment (or find it done); True when it was already done elsewhere."""
    try:
        result = encode.encode_segment(plan, segment, run_dir, should_stop=stop, sharing=sharing)
    except runner.Stopped as exc:
        raise DeadlineReached(f"stopped segment {segment.index}: the invocation's time is nearly up") from exc
    check_result(result, f"segment {segment.index}", expect_frames=True)
    return result.cached


def encode_audio_part(source: str, stream: int, audio_kbps: int, threads: int, run_dir: Path,
                      stop: Callable[[], bool], sharing: int = 1) -> bool:
    """The whole file's audio, once (a unit of work like a segment); True when already done."""
    if (run_dir / AUDIO_DONE).is_file() and (run_dir / AUDIO_PART).is_file():
        return True
    (run_dir / encode.SEGMENTS_DIR).mkdir(parents=True, exist_ok=True)
    try:
        result = runner.run(encode.audio_argv(source, stream, audio_kbps, AUDIO_PART, threads),
                            label="audio encode", cwd=run_dir, should_stop=stop, sharing=sharing)
    except runner.Stopped as exc:
        raise DeadlineReached("stopped the audio encode: the invocation's time is nearly up") from exc
    check_result(result, "audio encode", expect_frames=False)
    encode.write_marker(run_dir / AUDIO_DONE, {"audio": stream})
    return False


def _encode_audio(source: str, stream: int, options: Options, run_dir: Path, stop: Stopper, sharing: int) -> bool:
    return encode_audio_part(source, stream, options.audio_bitrate, options.threads, run_dir, stop, sharing)


# ------------------------------------------------------------------ poster, sprite, HLS


def _mean_luma(jpeg: bytes) -> float:
    import io

    from PIL import Image, ImageStat

    with Image.open(io.BytesIO(jpeg)) as image:
        return float(ImageStat.Stat(image.convert("L")).mean[0])


def picked_offset(result: runner.Result) -> float:
    """Seconds from the search start to the frame the thumbnail filter picked (the poster's
    ``time`` is that frame's, not where the search began); 0 when ffmpeg did not say."""
    found = [float(m.group(1)) for line in result.stderr_lines
             if (m := re.search(r"pts_time:(-?[0-9.]+(?:e-?[0-9]+)?)", line))]
    return max(0.0, found[-1]) if found else 0.0


def make_poster(plan: VideoPlan, info: MediaInfo, rung: Rung, out: OutputDir, stop: Stopper) -> None:
    """A JPEG of a representative frame: the thumbnail filter's pick near 10% of the
    duration, moving on to 40% and 70% while the pick is nearly black (fades, intros).
    A video too short for those seeks (one frame, a few frames) gets its first frame."""
    best: tuple[float, bytes, float] | None = None
    target = out.run_dir / "poster.jpg"
    for position in (*POSTER_POSITIONS, None):
        if position is None and best is not None:
            break
        at = info.duration * position if position is not None else 0.0
        inp = ffmpeg.input(plan.source, ss=f"{at:.3f}") if position is not None else ffmpeg.input(plan.source)
        picked = inp[str(plan.stream)]
        if position is not None:
            picked = picked.filter("thumbnail", POSTER_WINDOW_FRAMES)
        graph = (picked.filter("metadata", mode="add", key=POSTER_TAG, value=1)
                 .filter("metadata", mode="print", key=POSTER_TAG, file="pipe:2")  # its pts_time, on stderr
                 .filter("scale", rung.width, rung.height))
        graph = encode.to_sdr(graph, plan).filter("setsar", 1)
        argv = encode._global(ffmpeg.output(graph, runner.media_url(Path("poster.jpg")), **{
            "frames:v": 1, "q:v": 3, "update": 1, "map_metadata": -1}), 0)
        result = run_checked(argv, "poster", stop, cwd=out.run_dir, expect_frames=False)
        if not target.is_file() or target.stat().st_size == 0:
            continue
        data = target.read_bytes()
        luma = _mean_luma(data)
        if best is None or luma > best[0]:
            best = (luma, data, at + picked_offset(result))
        if luma >= DARK_LUMA:
            break
    if best is None:
        raise CorruptInput("no frame could be decoded for the poster, not even the first one")
    out.write_bytes("poster.jpg", best[1], "image/jpeg", width=rung.width, height=rung.height,
                    time=round(best[2], 3), mean_luma=round(best[0], 1))


def make_sprite(plan: VideoPlan, info: MediaInfo, out: OutputDir, options: Options, stop: Stopper) -> None:
    """A grid of small thumbnails in one JPEG, indexed by a WebVTT file (``#xywh=``)."""
    duration = max(info.duration, 0.001)
    interval = max(options.sprite_interval, duration / MAX_SPRITE_THUMBS)
    count = max(1, math.ceil(duration / interval))
    columns = min(SPRITE_COLUMNS, count)
    rows = math.ceil(count / columns)
    top = plan.rungs[0]
    width = SPRITE_WIDTH
    height = encode.even(width * top.height / top.width)
    inp = ffmpeg.input(plan.source)
    pick = f"isnan(prev_selected_t)+gte(t-prev_selected_t,{interval:.3f})"  # first frame, then every interval
    graph = encode.to_sdr(inp[str(plan.stream)].filter("select", pick).filter("scale", width, height), plan)
    graph = graph.filter("setsar", 1).filter("tile", f"{columns}x{rows}")
    out.path("sprite.jpg", "image/jpeg", width=columns * width, height=rows * height, thumbnails=count,
             interval=round(interval, 3))
    argv = encode._global(ffmpeg.output(graph, runner.media_url(Path("sprite.jpg")), **{
        "frames:v": 1, "q:v": 4, "update": 1, "map_metadata": -1}), 0)
    run_checked(argv, "sprite", stop, cwd=out.run_dir, expect_frames=False)
    require_output(out.run_dir / "sprite.jpg", "sprite")
    cues = ["WEBVTT", ""]
    for i in range(count):
        start, end = i * interval, min((i + 1) * interval, duration)
        x, y = (i % columns) * width, (i // columns) * height
        cues += [f"{_vtt_time(start)} --> {_vtt_time(end)}", f"sprite.jpg#xywh={x},{y},{width},{height}", ""]
    out.write_bytes("sprite.vtt", "\n".join(cues).encode(), "text/vtt", thumbnails=count)


def _vtt_time(t: float) -> str:
    ms = round(t * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def package_hls(plan: VideoPlan, out: OutputDir, options: Options, stop: Stopper) -> None:
    """fMP4 HLS per rendition (copied, not re-encoded) and a master playlist."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for rung in plan.rungs:
        folder = out.run_dir / "hls" / f"{rung.label}p"
        folder.mkdir(parents=True, exist_ok=True)
        source = runner.media_url((out.run_dir / rung.name).absolute())
        stream = ffmpeg.output(ffmpeg.input(source), "index.m3u8", c="copy", map=0, f="hls",
                               hls_time=options.hls_segment_seconds, hls_playlist_type="vod",
                               hls_segment_type="fmp4", hls_fmp4_init_filename="init.mp4",
                               hls_segment_filename="seg-%05d.m4s", hls_flags="independent_segments")
        run_checked(encode._global(stream, 0), f"HLS {rung.label}p", stop, cwd=folder, expect_frames=False)
        for path in sorted(folder.iterdir()):
            out.path(f"hls/{rung.label}p/{path.name}", MEDIA_TYPES.get(path.suffix, "application/octet-stream"))
        probed = out.facts(rung.name)  # what output_facts read from this MP4: no second probe
        bandwidth = int((probed.get("bitrate") or 1_000_000) * 1.1)
        level = probed.get("level") or 40
        codecs = f"avc1.6400{level:02x}" + (",mp4a.40.2" if probed.get("audio_codec") else "")  # High, this level
        lines += [f'#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},RESOLUTION={rung.width}x{rung.height},'
                  f'FRAME-RATE={float(Fraction(plan.rate)):.3f},CODECS="{codecs}"', f"{rung.label}p/index.m3u8"]
    out.write_bytes("hls/master.m3u8", ("\n".join(lines) + "\n").encode(), "application/vnd.apple.mpegurl",
                    renditions=len(plan.rungs))
