"""What is in a media file: container, streams, timing, rotation, encryption markers.

ffprobe (JSON) is the source when it is installed. Where it is not (the imageio-ffmpeg
wheel ships ffmpeg alone), the same facts are parsed from ``ffmpeg -i``'s stream
report: coarser (no VFR measurement, no keyframe list) but enough to transcode.
Raises :class:`ProbeFailed` with ffmpeg's own relevant lines; ``core`` classifies it.
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from workers.video_transcode import runner

KEYFRAME_WINDOW_SECONDS = 4  # packets read after each seek (from where it lands): a GOP and more
VFR_SAMPLE_SECONDS = 20  # packet headers read from the start to measure frame-time regularity
VFR_SAMPLE_PACKETS = 600  # packets read to measure frame-time regularity
INTERLACED_FIELD_ORDERS = ("tt", "bb", "tb", "bt")
HDR_TRANSFERS = ("smpte2084", "arib-std-b67")  # PQ and HLG, as ffmpeg names them
_COLOR = re.compile(r"\((?:tv|pc), (?P<space>[\w-]+)/(?P<primaries>[\w-]+)/(?P<transfer>[\w-]+)")  # ffmpeg -i
# ffmpeg's words for them in its stream report (libavcodec's av_get_field_order names)
_FIELD_WORDS = (("top coded first", "tb"), ("bottom coded first", "bt"), ("top first", "tt"),
                ("bottom first", "bb"), ("progressive", "progressive"))
VFR_TOLERANCE = 0.02  # frame durations differing by more than this fraction: variable frame rate
ENCRYPTION_SCAN_BYTES = 64 << 20  # most of moov/moof we search for encryption boxes
ENCRYPTION_BOXES = (b"encv", b"enca", b"tenc", b"pssh", b"sinf", b"senc")
_TOP_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"moof", b"mfra", b"styp",
                        b"sidx", b"uuid", b"pdin", b"meta", b"emsg", b"prft"})


class ProbeFailed(Exception):
    """ffprobe/ffmpeg could not read the file; ``lines`` are its relevant stderr lines."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines) or "unreadable media")
        self.lines = lines


@dataclass(frozen=True)
class VideoStream:
    index: int
    codec: str
    profile: str | None
    width: int
    height: int
    pix_fmt: str | None
    bit_depth: int
    frame_rate: float  # average frames per second
    frame_rate_exact: str  # the rational ffmpeg reports, e.g. "30000/1001"
    variable_frame_rate: bool
    rotation: int  # degrees clockwise the player must turn the picture (0, 90, 180, 270)
    bitrate: int | None
    frames: int | None
    start_time: float
    sample_aspect_ratio: str = "1:1"  # pixel shape; anamorphic sources (e.g. 1440x1080 at 4:3) differ
    level: int | None = None  # H.264/HEVC level as ffprobe reports it (40 = 4.0)
    field_order: str | None = None  # ffprobe's: progressive; tt, bb, tb, bt (interlaced); unknown
    color_transfer: str | None = None  # ffprobe's: bt709, smpte2084 (PQ, HDR10), arib-std-b67 (HLG) ...
    color_primaries: str | None = None  # bt709, bt2020 ...
    color_space: str | None = None  # the YUV matrix: bt709, bt2020nc ...

    @property
    def interlaced(self) -> bool:
        """Fields, not frames (broadcast, DV, AVCHD camcorders): deinterlaced before scaling."""
        return self.field_order in INTERLACED_FIELD_ORDERS

    @property
    def hdr(self) -> bool:
        """HDR: PQ (HDR10, Dolby Vision's base layer) or HLG (every recent phone's video)."""
        return self.color_transfer in HDR_TRANSFERS

    @property
    def display_size(self) -> tuple[int, int]:
        """Width and height as shown: non-square pixels widened or narrowed, then rotated."""
        width = self.width
        sar = _rate(self.sample_aspect_ratio.replace(":", "/"))
        if sar is not None and sar != 1:
            width = max(2, round(self.width * sar))
        return (self.height, width) if self.rotation in (90, 270) else (width, self.height)


@dataclass(frozen=True)
class AudioStream:
    index: int
    codec: str
    sample_rate: int | None
    channels: int | None
    channel_layout: str | None
    bitrate: int | None
    profile: str | None = None  # AAC: "LC", "HE-AAC", ...


@dataclass(frozen=True)
class MediaInfo:
    container: str
    duration: float
    bitrate: int | None
    start_time: float
    video: VideoStream | None
    audio: AudioStream | None
    streams: list[dict[str, Any]] = field(default_factory=list)
    encrypted: bool = False
    prober: str = "ffprobe"
    keyframes: tuple[float, ...] = ()  # video keyframes near every ``keyframes_every`` s (segment cuts)

    def facts(self) -> dict[str, Any]:
        """The probe facts recorded in the manifest."""
        return {
            "container": self.container,
            "duration": round(self.duration, 3),
            "bitrate": self.bitrate,
            "video": asdict(self.video) if self.video else None,
            "audio": asdict(self.audio) if self.audio else None,
            "streams": self.streams,
            "probed_with": self.prober,
        }


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _rate(text: str | None) -> Fraction | None:
    try:
        rate = Fraction(text or "")
    except (ValueError, ZeroDivisionError):
        return None
    return rate if rate > 0 else None


def _rotation(degrees: float) -> int:
    """ffprobe's display-matrix angle (counter-clockwise) as a clockwise quarter turn."""
    return round(-degrees / 90.0) % 4 * 90


def _bit_depth(pix_fmt: str | None, raw: Any) -> int:
    bits = _int(raw)
    if bits:
        return bits
    match = re.search(r"(9|10|12|14|16)(le|be)?$", pix_fmt or "")
    return int(match.group(1)) if match else 8


_ADDRESS = re.compile(r" @ 0x[0-9a-f]+")


def relevant_lines(lines: list[str], limit: int = 6) -> list[str]:
    """The stderr lines that say what went wrong (not the banner or stream listing)."""
    keys = ("error", "invalid", "not found", "corrupt", "truncat", "unsupported", "failed", "no such",
            "could not", "unable", "cannot", "missing", "partial file", "does not contain", "decod",
            "not implemented", "not supported")
    lines = [_ADDRESS.sub("", line).strip() for line in lines]  # "[aac @ 0x55..]": the same line each run
    picked = [line for line in lines if any(k in line.lower() for k in keys)]
    if not picked:
        picked = lines[-3:]
    unique = list(dict.fromkeys(picked))
    return unique[:limit]


def probe(path: Path, *, measure_vfr: bool = True, keyframes_every: float = 0) -> MediaInfo:
    """Facts about ``path``; ffprobe when available, else ffmpeg's stream report.

    ``keyframes_every`` > 0 also looks for the video keyframes near every multiple of that
    many seconds (where segment-parallel encoding cuts), in the same ffprobe run that
    measures the frame-rate regularity.
    """
    encrypted, container_duration = scan_bmff(path)
    exe = runner.ffprobe_exe()
    if exe is None:
        return _probe_with_ffmpeg(path, encrypted)
    # warnings too: a codec ffmpeg lacks ("Audio object type 42 is not implemented") is only a warning
    argv = [exe, "-v", "warning", "-hide_banner", "-show_format", "-show_streams"]
    hinted_cuts: list[float] = []
    if measure_vfr:  # the same run reads packet headers: the first seconds, and near each cut
        hinted_cuts = _every(0.0, container_duration or 0.0, keyframes_every)
        argv += ["-read_intervals", _intervals(hinted_cuts), "-show_entries", "packet=stream_index,pts_time,flags"]
    result = runner.run([*argv, "-of", "json", runner.media_url(path)], label="probe", collect_stdout=True)
    try:
        data = json.loads(result.stdout or b"{}")
    except ValueError:
        data = {}
    fmt = data.get("format")
    if result.returncode != 0 or not isinstance(fmt, dict):
        raise ProbeFailed(relevant_lines(result.stderr_lines))
    streams = [s for s in data.get("streams", []) if isinstance(s, dict)]
    video_raw = next((s for s in streams if s.get("codec_type") == "video"
                      and not (s.get("disposition") or {}).get("attached_pic")), None)
    audio_raw = next((s for s in streams if s.get("codec_type") == "audio"), None)
    video = None
    keyframes: tuple[float, ...] = ()
    if video_raw is not None:
        avg = _rate(video_raw.get("avg_frame_rate")) or _rate(video_raw.get("r_frame_rate")) or Fraction(25)
        rotation = 0
        for side in video_raw.get("side_data_list") or []:
            if "rotation" in side:
                rotation = _rotation(_float(side["rotation"]))
        if not rotation and _int((video_raw.get("tags") or {}).get("rotate")):
            rotation = int((video_raw.get("tags") or {})["rotate"]) % 360
        index = int(video_raw.get("index", 0))
        if measure_vfr:
            mine = [(str(p.get("pts_time")), str(p.get("flags") or "")) for p in data.get("packets") or []
                    if isinstance(p, dict) and p.get("stream_index") == index]
            vfr, seen = _packet_facts(mine, tick=float(_rate(video_raw.get("time_base")) or 0))
            cuts = _every(_float(fmt.get("start_time")), _float(fmt.get("duration")), keyframes_every)
            if cuts and not hinted_cuts:  # no container duration up front (not MP4/MOV): one more scan
                seen = _scan_cut_windows(exe, path, cuts)
            keyframes = seen if cuts else ()
        else:
            vfr = _rate(video_raw.get("r_frame_rate")) != avg
        video = VideoStream(
            index=index, codec=str(video_raw.get("codec_name") or video_raw.get("codec_tag_string") or "unknown"),
            profile=video_raw.get("profile"), width=int(video_raw.get("width") or 0),
            height=int(video_raw.get("height") or 0), pix_fmt=video_raw.get("pix_fmt"),
            bit_depth=_bit_depth(video_raw.get("pix_fmt"), video_raw.get("bits_per_raw_sample")),
            frame_rate=round(float(avg), 3), frame_rate_exact=f"{avg.numerator}/{avg.denominator}",
            variable_frame_rate=vfr, rotation=rotation, bitrate=_int(video_raw.get("bit_rate")),
            frames=_int(video_raw.get("nb_frames")), start_time=_float(video_raw.get("start_time")),
            sample_aspect_ratio=str(video_raw.get("sample_aspect_ratio") or "1:1"), level=_int(video_raw.get("level")),
            field_order=video_raw.get("field_order"), color_transfer=video_raw.get("color_transfer"),
            color_primaries=video_raw.get("color_primaries"), color_space=video_raw.get("color_space"))
    audio = None
    if audio_raw is not None:
        audio = AudioStream(
            index=int(audio_raw.get("index", 0)), codec=str(audio_raw.get("codec_name") or "unknown"),
            sample_rate=_int(audio_raw.get("sample_rate")), channels=_int(audio_raw.get("channels")),
            channel_layout=audio_raw.get("channel_layout"), bitrate=_int(audio_raw.get("bit_rate")),
            profile=audio_raw.get("profile"))
    encrypted = encrypted or any(s.get("codec_tag_string") in ("encv", "enca") for s in streams)
    return MediaInfo(
        container=str(fmt.get("format_name") or "unknown"), duration=_float(fmt.get("duration")),
        bitrate=_int(fmt.get("bit_rate")), start_time=_float(fmt.get("start_time")), video=video, audio=audio,
        streams=[{"index": s.get("index"), "type": s.get("codec_type"),
                  "codec": s.get("codec_name") or s.get("codec_tag_string")} for s in streams],
        encrypted=encrypted, prober="ffprobe", keyframes=keyframes)


def _every(start: float, duration: float, seconds: float) -> list[float]:
    """The times ``start + k * seconds`` inside the file (k >= 1), none when ``seconds`` is 0."""
    if seconds <= 0 or duration < 1.5 * seconds:
        return []
    return [start + k * seconds for k in range(1, int(duration / seconds) + 1) if k * seconds < duration - 1]


def _intervals(cuts: list[float]) -> str:
    """ffprobe ``-read_intervals``: the first VFR_SAMPLE_SECONDS, then a window after each cut.

    A seek goes through the container's index (MP4/MOV, MKV) to the keyframe before the
    cut; KEYFRAME_WINDOW_SECONDS from there holds it and any just after. Never the whole
    file: on an S3-backed mount that would read every byte of the video.
    """
    return ",".join([f"%+{VFR_SAMPLE_SECONDS}"] + [f"{t:.3f}%+{KEYFRAME_WINDOW_SECONDS}" for t in cuts])


def _packet_facts(packets: Iterable[tuple[str, str]], tick: float = 0.0) -> tuple[bool, tuple[float, ...]]:
    """(variable frame rate?, keyframe times) from the video's (pts_time, flags) packets.

    ``tick`` is the stream's time base: frame times rounded to it (Matroska keeps
    milliseconds, so 30 fps reads as 33, 33, 34 ms) are not a variable rate.
    """
    times: set[float] = set()
    keyframes: set[float] = set()
    for pts, flags in packets:
        if pts in ("", "N/A", "None"):
            continue
        times.add(_float(pts, -1.0))
        if "K" in flags:
            keyframes.add(_float(pts, -1.0))
    # the cut windows follow the first seconds (or re-read them): the lowest times are the sample
    sample = sorted(times)[:VFR_SAMPLE_PACKETS]
    deltas = [b - a for a, b in itertools.pairwise(sample) if b > a]
    vfr = False
    if len(deltas) >= 3:
        typical = statistics.median(deltas)
        allowed = max(typical * VFR_TOLERANCE, tick * 1.01)
        vfr = any(abs(d - typical) > allowed for d in deltas[:-1])
    return vfr, tuple(sorted(keyframes))


def _scan_cut_windows(exe: str, path: Path, cuts: list[float]) -> tuple[float, ...]:
    """Keyframes near ``cuts`` where the duration was not known before the probe (not MP4/MOV)."""
    result = runner.run([exe, "-v", "error", "-select_streams", "v:0", "-read_intervals", _intervals(cuts),
                         "-show_entries", "packet=pts_time,flags", "-of", "csv=p=0", runner.media_url(path)],
                        label="probe-keyframes", collect_stdout=True)
    lines = (line.partition(",") for line in result.stdout.decode().split())
    return _packet_facts((pts, flags) for pts, _, flags in lines)[1]


# ---------------------------------------------------------------- without ffprobe

_INPUT = re.compile(r"^Input #0, (?P<fmt>.+?), from ")
_DURATION = re.compile(r"Duration: (?:(?P<h>\d+):(?P<m>\d+):(?P<s>[\d.]+)|N/A)"
                       r"(?:, start: (?P<start>-?[\d.]+))?(?:, bitrate: (?P<br>\d+) kb/s)?")
_STREAM = re.compile(r"Stream #0:(?P<index>\d+)\S*: (?P<type>Video|Audio|Data|Subtitle|Attachment): "
                     r"(?P<codec>[\w-]+)(?P<rest>.*)$")
_ROTATION = re.compile(r"rotation of (?P<deg>-?[\d.]+) degrees|^\s*rotate\s*:\s*(?P<tag>-?\d+)")
_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "5.0": 5, "5.1": 6, "6.1": 7, "7.1": 8}


def _probe_with_ffmpeg(path: Path, encrypted: bool) -> MediaInfo:
    result = runner.run([runner.ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", runner.media_url(path)],
                        label="probe", collect_stdout=True)
    lines = result.stderr_lines
    container = duration = None
    start = 0.0
    bitrate = None
    streams: list[dict[str, Any]] = []
    video: VideoStream | None = None
    audio: AudioStream | None = None
    current: str | None = None
    for line in lines:
        if (m := _INPUT.match(line.strip())) is not None:
            container = m.group("fmt")
        elif (m := _DURATION.search(line)) is not None and duration is None:
            if m.group("h"):
                duration = int(m.group("h")) * 3600 + int(m.group("m")) * 60 + float(m.group("s"))
            start = _float(m.group("start"))
            bitrate = _int(m.group("br")) and int(m.group("br")) * 1000
        elif (m := _STREAM.search(line)) is not None:
            index, kind, codec, rest = int(m.group("index")), m.group("type").lower(), m.group("codec"), m.group("rest")
            streams.append({"index": index, "type": kind, "codec": codec})
            current = None
            br = re.search(r"(\d+) kb/s", rest)
            if kind == "video" and video is None and "attached pic" not in rest:
                size = re.search(r", (\d{2,5})x(\d{2,5})", rest)
                fps = re.search(r"([\d.]+)(k?) fps", rest)
                tbr = re.search(r"([\d.]+)(k?) tbr", rest)
                pix = re.search(r", ((?:yuv|yuvj|nv|gray|rgb|bgr|gbr|p0)\w*)", rest)
                rate = float(fps.group(1)) * (1000 if fps.group(2) else 1) if fps else 25.0
                base = float(tbr.group(1)) * (1000 if tbr.group(2) else 1) if tbr else rate
                exact = Fraction(rate).limit_denominator(1001)
                video = VideoStream(
                    index=index, codec=codec, profile=None, width=int(size.group(1)) if size else 0,
                    height=int(size.group(2)) if size else 0, pix_fmt=pix.group(1) if pix else None,
                    bit_depth=_bit_depth(pix.group(1) if pix else None, None), frame_rate=round(rate, 3),
                    frame_rate_exact=f"{exact.numerator}/{exact.denominator}",
                    variable_frame_rate=abs(base - rate) > rate * VFR_TOLERANCE, rotation=0,
                    bitrate=int(br.group(1)) * 1000 if br else None, frames=None, start_time=start,
                    sample_aspect_ratio=sar.group(1) if (sar := re.search(r"\[SAR (\d+:\d+)", rest)) else "1:1",
                    field_order=next((order for words, order in _FIELD_WORDS if words in rest), None),
                    color_space=(c := _COLOR.search(rest)) and c.group("space"),
                    color_primaries=c and c.group("primaries"), color_transfer=c and c.group("transfer"))
                current = "video"
            elif kind == "audio" and audio is None:
                hz = re.search(r"(\d+) Hz, ([^,]+)", rest)
                layout = hz.group(2).strip() if hz else None
                channels = re.match(r"(\d+) channels", layout or "")
                audio = AudioStream(
                    index=index, codec=codec, sample_rate=int(hz.group(1)) if hz else None,
                    channels=int(channels.group(1)) if channels else _LAYOUT_CHANNELS.get((layout or "").split("(")[0]),
                    channel_layout=None if channels else layout, bitrate=int(br.group(1)) * 1000 if br else None)
        elif current == "video" and video is not None and (m := _ROTATION.search(line)) is not None:
            degrees = -_float(m.group("deg")) if m.group("deg") else _float(m.group("tag"))
            video = VideoStream(**{**asdict(video), "rotation": round(degrees / 90.0) % 4 * 90})
    if container is None or (not streams and duration is None):
        raise ProbeFailed(relevant_lines(lines))
    return MediaInfo(container=container, duration=duration or 0.0, bitrate=bitrate, start_time=start,
                     video=video, audio=audio, streams=streams, encrypted=encrypted, prober="ffmpeg")


# ---------------------------------------------------------------- encryption

def _movie_duration(moov: bytes) -> float | None:
    """The ``mvhd`` duration in seconds (the movie header is moov's first child)."""
    at = moov.find(b"mvhd")
    if at < 4:
        return None
    body = moov[at + 4:at + 36]
    if len(body) < 32:
        return None
    if body[0] == 1:  # version 1: 64-bit times
        timescale, duration = int.from_bytes(body[20:24], "big"), int.from_bytes(body[24:32], "big")
    else:
        timescale, duration = int.from_bytes(body[12:16], "big"), int.from_bytes(body[16:20], "big")
    return duration / timescale if timescale else None


def scan_bmff(path: Path) -> tuple[bool, float | None]:
    """(Common Encryption boxes present?, movie duration) of an ISO-BMFF file (MP4/MOV).

    Walks the top-level boxes and searches only ``moov``/``moof`` (bounded). Encryption:
    ffmpeg would otherwise "decode" such a file without its key and exit 0 with garbage
    (encv/enca/tenc/pssh/sinf). The duration, known before ffprobe runs, lets one ffprobe
    run also read the packets near segment cuts. Not ISO-BMFF: (False, None).
    """
    duration: float | None = None
    budget = ENCRYPTION_SCAN_BYTES
    with path.open("rb") as f:
        offset = 0
        first = True
        while budget > 0:
            f.seek(offset)
            header = f.read(16)
            if len(header) < 8:
                return False, duration
            size = int.from_bytes(header[:4], "big")
            kind = header[4:8]
            if first and kind not in _TOP_BOXES:
                return False, None  # not ISO-BMFF
            first = False
            header_len = 8
            if size == 1 and len(header) >= 16:
                size, header_len = int.from_bytes(header[8:16], "big"), 16
            elif size == 0:
                size = path.stat().st_size - offset
            if size < header_len:
                return False, duration
            if kind in (b"moov", b"moof"):
                f.seek(offset + header_len)
                body = f.read(min(size - header_len, budget))
                budget -= len(body)
                if kind == b"moov" and duration is None:
                    duration = _movie_duration(body)
                if any(marker in body for marker in ENCRYPTION_BOXES):
                    return True, duration
            offset += size
    return False, duration
