"""Options of the image worker: which renditions to make and how.

Parsed without Pillow (cold start). Every value is checked here, so a typo or an
absurd size is a usage error before any pixel is decoded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from shared.errors import UsageError
from shared.options import OptionReader

WORKER = "image-resize"

MAX_PIXELS = 100_000_000  # decoded pixels per frame: bounds memory (a 100 Mpx RGBA frame is 400 MB)
MAX_PIXELS_CEILING = 1_000_000_000
MAX_FRAMES = 1000  # frames decoded for animated output
MAX_EDGE = 16_384  # largest rendition edge we make (also WebP's own limit)
MAX_RENDITIONS = 12  # sizes per request

DEFAULT_SIZES = ("320", "1024", "2048")
DEFAULT_FORMATS = ("jpeg", "webp")
DEFAULT_QUALITY = 85
FITS = ("inside", "cover", "contain")
FORMATS = ("jpeg", "webp", "avif", "png", "gif")
FORMAT_ALIASES = {"jpg": "jpeg"}
ANIMATED_FORMATS = frozenset({"webp", "gif"})

_SIZE = r"(\d{1,9})(?:x(\d{1,9}))?"  # compiled on first use (re caches it), not at import
_HEX = r"#?([0-9a-f]{3}|[0-9a-f]{6})"
_NAMED_COLOURS = {"white": "#ffffff", "black": "#000000"}


class Size(NamedTuple):
    """A target box; ``longest_edge`` sizes ("320") are a square box named ``w320``."""

    width: int
    height: int
    longest_edge: bool

    @property
    def label(self) -> str:
        return str(self.width) if self.longest_edge else f"{self.width}x{self.height}"


DEFAULT_BOXES = tuple(Size(int(s), int(s), True) for s in DEFAULT_SIZES)


class Options(NamedTuple):
    sizes: tuple[Size, ...] = DEFAULT_BOXES
    fit: str = "inside"
    formats: tuple[str, ...] = DEFAULT_FORMATS
    quality: int = DEFAULT_QUALITY
    background: str = "#ffffff"
    strip_metadata: bool = True
    auto_orient: bool = True
    animated: bool = False
    upscale: bool = False
    max_pixels: int = MAX_PIXELS
    max_frames: int = MAX_FRAMES
    memory_mb: int = 0  # the memory a decode may fill; 0: the function's (Lambda) or the machine's

    @property
    def background_rgb(self) -> tuple[int, int, int]:
        value = int(self.background[1:], 16)
        return (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF

    def to_manifest(self) -> dict[str, Any]:
        return {
            "sizes": [s.label for s in self.sizes],
            "fit": self.fit,
            "formats": list(self.formats),
            "quality": self.quality,
            "background": self.background,
            "strip_metadata": self.strip_metadata,
            "auto_orient": self.auto_orient,
            "animated": self.animated,
            "upscale": self.upscale,
            "max_pixels": self.max_pixels,
            "max_frames": self.max_frames,
        }  # not memory_mb: where the run happens, not what it makes


def _size(text: str) -> Size:
    match = re.fullmatch(_SIZE, text.lower())
    if match is None:
        raise UsageError(f"option sizes: {text!r} is not a size; "
                         "use a longest edge like 1024 or a box like 320x240")
    width = int(match.group(1))
    height = int(match.group(2)) if match.group(2) else width
    for edge in (width, height):
        if not 1 <= edge <= MAX_EDGE:
            raise UsageError(f"option sizes: {text!r} is out of range; each edge must be 1..{MAX_EDGE} px")
    return Size(width, height, match.group(2) is None)


def _colour(text: str) -> str:
    value = _NAMED_COLOURS.get(text.strip().lower(), text.strip().lower())
    match = re.fullmatch(_HEX, value)
    if match is None:
        raise UsageError(f"option background={text!r} is not a colour; use #rrggbb, #rgb, white or black")
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return "#" + digits


def parse(raw: Mapping[str, Any] | None) -> Options:
    """Options from an event (JSON values) or the CLI (strings); UsageError when invalid."""
    reader = OptionReader(raw, WORKER)
    sizes = sorted({_size(s) for s in reader.items("sizes", DEFAULT_SIZES)})
    if len(sizes) > MAX_RENDITIONS:
        raise UsageError(f"option sizes: at most {MAX_RENDITIONS} sizes, got {len(sizes)}")
    formats: list[str] = []
    for name in reader.items("formats", DEFAULT_FORMATS):
        fmt = FORMAT_ALIASES.get(name.lower(), name.lower())
        if fmt not in FORMATS:
            raise UsageError(f"option formats: {name!r} is not one of {', '.join(FORMATS)}")
        if fmt not in formats:
            formats.append(fmt)
    options = Options(
        sizes=tuple(sizes),
        fit=reader.choice("fit", "inside", FITS),
        formats=tuple(sorted(formats, key=FORMATS.index)),
        quality=reader.integer("quality", DEFAULT_QUALITY, lo=1, hi=100),
        background=_colour(reader.text("background", "#ffffff", max_len=32)),
        strip_metadata=reader.boolean("strip_metadata", True),
        auto_orient=reader.boolean("auto_orient", True),
        animated=reader.boolean("animated", False),
        upscale=reader.boolean("upscale", False),
        max_pixels=reader.integer("max_pixels", MAX_PIXELS, lo=1, hi=MAX_PIXELS_CEILING),
        max_frames=reader.integer("max_frames", MAX_FRAMES, lo=1, hi=100_000),
        memory_mb=reader.integer("memory_mb", 0, lo=0, hi=1 << 20),
    )
    reader.finish()
    return options
