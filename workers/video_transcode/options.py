"""Options of the video worker: the rendition ladder, encoder settings, extra outputs.

Parsed without ffmpeg (cold start). Named limits are module constants that an option
may raise, hit with :class:`shared.errors.LimitExceeded`.

How many local ffmpeg processes a segment-parallel run uses (``MOUNTWORKS_VIDEO_JOBS``)
is not an option: it does not change the output, so it must not change the run-id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from shared.errors import UsageError
from shared.options import OptionReader

WORKER = "video-transcode"

MAX_DURATION_SECONDS = 4 * 3600.0  # longest input we transcode (a 2-hour film fits twice)
MAX_PIXELS = 8192 * 4320  # decoded pixels per frame (8K DCI)
MAX_FPS = 60.0  # output frame rate cap; faster sources are resampled down
MAX_RUNGS = 8

DEFAULT_LADDER = ("1080", "720", "480")
DEFAULT_CRF = 23
DEFAULT_PRESET = "veryfast"  # Lambda bills by the millisecond: fast beats small here
DEFAULT_AUDIO_KBPS = 128
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


DEFAULT_HEIGHTS = tuple(int(r) for r in DEFAULT_LADDER)
HDR_CHOICES = ("sdr", "keep")  # what an HDR (PQ, HLG) source becomes: tone-mapped to SDR BT.709, or kept as tagged


class Options(NamedTuple):
    ladder: tuple[int, ...] = DEFAULT_HEIGHTS  # short-side heights, largest first
    crf: int = DEFAULT_CRF
    preset: str = DEFAULT_PRESET
    audio_bitrate: int = DEFAULT_AUDIO_KBPS  # kbit/s
    audio_copy: bool = True  # AAC-LC at or under audio_bitrate is copied as it is, not encoded again
    threads: int = 0  # x264 threads per ffmpeg; 0 = ffmpeg's choice (all cores)
    max_fps: float = MAX_FPS
    poster: bool = True
    sprite: bool = False
    sprite_interval: float = 10.0  # seconds between sprite thumbnails
    hls: bool = False
    hls_segment_seconds: int = 6
    segment_seconds: int = 0  # > 0: segment-parallel encoding with segments of about this length
    max_duration: float = MAX_DURATION_SECONDS
    max_pixels: int = MAX_PIXELS
    hdr: str = "sdr"  # an HDR source: "sdr" tone-maps it to BT.709, "keep" keeps its HLG/PQ tags

    def to_manifest(self) -> dict[str, Any]:
        return {
            "ladder": list(self.ladder),
            "crf": self.crf,
            "preset": self.preset,
            "audio_bitrate": self.audio_bitrate,
            "audio_copy": self.audio_copy,
            "threads": self.threads,
            "max_fps": self.max_fps,
            "poster": self.poster,
            "sprite": self.sprite,
            "sprite_interval": self.sprite_interval,
            "hls": self.hls,
            "hls_segment_seconds": self.hls_segment_seconds,
            "segment_seconds": self.segment_seconds,
            "max_duration": self.max_duration,
            "max_pixels": self.max_pixels,
            "hdr": self.hdr,
        }


def _rung(text: str) -> int:
    value = text.lower().removesuffix("p")
    if not value.isdigit() or not 64 <= int(value) <= 4320:
        raise UsageError(f"option ladder: {text!r} is not a height; use heights like 1080,720,480 (64..4320)")
    return int(value)


def parse(raw: Mapping[str, Any] | None) -> Options:
    """Options from an event (JSON values) or the CLI (strings); UsageError when invalid."""
    reader = OptionReader(raw, WORKER)
    ladder = tuple(sorted({_rung(r) for r in reader.items("ladder", DEFAULT_LADDER)}, reverse=True))
    if len(ladder) > MAX_RUNGS:
        raise UsageError(f"option ladder: at most {MAX_RUNGS} rungs, got {len(ladder)}")
    options = Options(
        ladder=ladder,
        crf=reader.integer("crf", DEFAULT_CRF, lo=0, hi=51),
        preset=reader.choice("preset", DEFAULT_PRESET, PRESETS),
        audio_bitrate=reader.integer("audio_bitrate", DEFAULT_AUDIO_KBPS, lo=16, hi=512),
        audio_copy=reader.boolean("audio_copy", True),
        threads=reader.integer("threads", 0, lo=0, hi=64),
        max_fps=reader.number("max_fps", MAX_FPS, lo=1.0, hi=240.0),
        poster=reader.boolean("poster", True),
        sprite=reader.boolean("sprite", False),
        sprite_interval=reader.number("sprite_interval", 10.0, lo=0.5, hi=3600.0),
        hls=reader.boolean("hls", False),
        hls_segment_seconds=reader.integer("hls_segment_seconds", 6, lo=1, hi=60),
        segment_seconds=reader.integer("segment_seconds", 0, lo=0, hi=3600),
        max_duration=reader.number("max_duration", MAX_DURATION_SECONDS, lo=1.0, hi=48 * 3600.0),
        max_pixels=reader.integer("max_pixels", MAX_PIXELS, lo=64 * 64, hi=16384 * 16384),
        hdr=reader.choice("hdr", "sdr", HDR_CHOICES),
    )
    reader.finish()
    return options
