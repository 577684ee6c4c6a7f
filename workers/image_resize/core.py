"""The image worker's processing core, and its one Pillow error boundary.

    sniff -> open (header only, pixel limit) -> plan renditions -> JPEG draft (DCT scaling)
    -> load -> sRGB, 8-bit, upright -> largest rendition first, each smaller one from the
    previous -> encode per format -> placeholder (BlurHash) and dominant colour

Every Pillow exception that means "this input is bad" is translated in
:func:`_translate_errors`, most specific first; anything else that escapes is a bug.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from PIL import Image, ImageFile, UnidentifiedImageError, _imaging, features

from shared import config, memory
from shared.errors import (
    EMPTY_INPUT,
    CorruptInput,
    LimitExceeded,
    UnsupportedInput,
    UsageError,
    environment_fault,
)
from shared.runs import OutputDir
from shared.worker import InputFile, RunContext
from workers.image_resize.options import ANIMATED_FORMATS, Options, Size
from workers.image_resize.sniff import detect_format

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never a half-grey rendition

# Pillow's image memory comes in blocks; by default a freed block goes straight back to the
# OS, so every decode and resize of a large photo faults its pages in anew (~400k page
# faults and ~5% of the time for 8 24 Mpx photos). Keeping up to BLOCKS_MAX freed 4 MB
# blocks for the next image bounds what is held back at 96 MB. PILLOW_BLOCKS_MAX or
# PILLOW_BLOCK_SIZE in the environment win (Pillow reads them when it loads).
BLOCK_SIZE = 4 << 20
BLOCKS_MAX = 24
if not config.pillow_allocator_set():
    _imaging.set_block_size(BLOCK_SIZE)
    _imaging.set_blocks_max(BLOCKS_MAX)

RESAMPLE = Image.Resampling.LANCZOS
MILD_RESAMPLE = Image.Resampling.BICUBIC  # reductions by less than 2x (see _resampling)
REDUCING_GAP = 3.0  # reduce() by an integer factor first while the result stays >= 3x the target
EXACT_FACTOR_SLACK = 0.01  # a base this close to n times the rendition is box-averaged n x n (a mip-map)
DRAFT_GAP = 1.0  # JPEG DCT scaling may go down to the largest rendition's own size
PLACEHOLDER_EDGE = 32
DEADLINE_MARGIN = 1.0
MEDIA_TYPES = {"jpeg": "image/jpeg", "webp": "image/webp", "avif": "image/avif", "png": "image/png",
               "gif": "image/gif"}
EXTENSIONS = {"jpeg": "jpg", "webp": "webp", "avif": "avif", "png": "png", "gif": "gif"}
ANIMATABLE_INPUTS = frozenset({"GIF", "WEBP", "PNG", "AVIF"})  # not TIFF pages nor MPO pictures
_ROTATES = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


# ------------------------------------------------------------------ the error boundary


@contextlib.contextmanager
def _translate_errors(fmt: str | None, options: Options) -> Iterator[None]:
    """Pillow's exceptions -> our error tree (the only place this happens)."""
    what = fmt or "image"
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = options.max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        size = f" ({int(declared.group(1)):,} pixels)" if declared else ""
        raise LimitExceeded(
            f"the {what} declares more pixels{size} than max_pixels={options.max_pixels:,} allows, so it was "
            "not decoded (a decompression bomb, or a huge image); raise the max_pixels option to process it",
            limit="max_pixels") from exc
    except UnidentifiedImageError as exc:
        raise UnsupportedInput(
            f"Pillow cannot decode this file (content looks like {what}); it may be damaged or an "
            "unsupported variant") from exc
    except MemoryError as exc:
        raise LimitExceeded(f"decoding the {what} ran out of memory; lower max_pixels or give the "
                            "function more memory", limit="memory") from exc
    except OSError as exc:
        fault = environment_fault(exc, doing=f"reading or writing the {what}")
        if fault is not None:  # a full disk or a failing mount is not a damaged image
            raise fault from exc
        text = str(exc)
        if text.startswith("Unsupported "):  # Pillow's word for a variant it has no decoder for (BMP's)
            raise UnsupportedInput(
                f"Pillow cannot read this {what} ({text}): a variant it has no decoder for, or a damaged "
                "header; convert it to PNG or JPEG to process it") from exc
        if "truncated" in text or "broken data stream" in text:
            raise CorruptInput(f"the {what} is truncated or damaged ({text}); no rendition was made") from exc
        raise CorruptInput(f"the {what} cannot be decoded: {text}") from exc
    except (SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, ZeroDivisionError) as exc:
        raise CorruptInput(f"the {what} is malformed: {type(exc).__name__}: {exc}") from exc
    except RuntimeError as exc:  # how Pillow's AVIF decoder (libavif) fails; from our own code: a bug
        if not _raised_in_pillow(exc):
            raise
        text = str(exc)
        if any(words in text for words in _DECODER_LIMITS):
            raise UnsupportedInput(f"Pillow's {what} decoder cannot convert this image ({text}): a variant it "
                                   "does not handle; convert it to PNG or JPEG to process it") from exc
        raise CorruptInput(f"the {what} cannot be decoded: {text}") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit


_PILLOW_DIR = os.path.dirname(Image.__file__) + os.sep
# libavif's words for an image it cannot handle, rather than damaged data ("Decoding of color
# planes failed"): a valid AVIF test file whose crop libavif 1.4 cannot reformat says the first.
_DECODER_LIMITS = ("Reformat failed", "Not implemented", "not supported", "Unsupported")


def _raised_in_pillow(exc: BaseException) -> bool:
    """The exception left Pillow's own code (a decoder's C call), not ours."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PILLOW_DIR)


def _register_decoders(fmt: str | None) -> None:
    """pillow-heif is loaded only for HEIF (and AVIF where Pillow lacks it): cold start."""
    if fmt == "HEIF" or (fmt == "AVIF" and not features.check("avif")):
        try:
            import pillow_heif
        except ImportError as exc:
            raise UnsupportedInput(f"{fmt} input needs pillow-heif, which is not installed") from exc
        pillow_heif.register_heif_opener()
        if fmt == "AVIF":
            register_avif = getattr(pillow_heif, "register_avif_opener", None)
            if register_avif is None:
                raise UnsupportedInput("AVIF input needs Pillow built with AVIF (libavif) support")
            register_avif()


def _check_encoders(options: Options) -> None:
    if "avif" in options.formats and not features.check("avif"):
        raise UsageError("formats=avif needs Pillow built with AVIF (libavif) support; "
                         "it is not available in this build, choose jpeg, webp or png")


# ----------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Rendition:
    """One output size: scale ``scale`` of the upright source, optionally cropped or padded."""

    name: str
    scale: float
    width: int  # of the output
    height: int
    crop: tuple[float, float, float, float] | None  # cover: the box of the upright source used
    canvas: tuple[int, int] | None  # contain: the padded output size
    requested: tuple[str, ...]


def _base_name(size: Size, fit: str) -> str:
    if fit == "inside":
        return f"w{size.width}" if size.longest_edge else f"{size.width}x{size.height}"
    return f"{size.width}x{size.height}-{fit}"


def plan(width: int, height: int, options: Options) -> list[Rendition]:
    """Renditions for an upright ``width`` x ``height`` source, largest first.

    Never upscales unless asked: a box larger than the source gives the source size (for
    cover/contain, the box shrunk to fit at scale 1), and sizes that end up identical are
    made once, named after the smallest size that asked for it.
    """
    found: dict[tuple[int, int, int, int], Rendition] = {}
    for size in options.sizes:
        bw, bh = size.width, size.height
        crop: tuple[float, float, float, float] | None = None
        canvas: tuple[int, int] | None = None
        if options.fit == "cover":
            scale = max(bw / width, bh / height)
            if scale > 1 and not options.upscale:
                bw, bh, scale = max(1, round(bw / scale)), max(1, round(bh / scale)), 1.0
            cw, ch = min(width, bw / scale), min(height, bh / scale)
            left, top = (width - cw) / 2, (height - ch) / 2
            crop = (left, top, left + cw, top + ch)
            out_w, out_h = bw, bh
        else:
            scale = min(bw / width, bh / height)
            if scale > 1 and not options.upscale:
                if options.fit == "contain":
                    bw, bh = max(1, round(bw / scale)), max(1, round(bh / scale))
                scale = 1.0
            out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))
            if options.fit == "contain":
                canvas = (bw, bh)
        key = (out_w, out_h, *(canvas or (0, 0)))
        if key in found:
            prior = found[key]
            found[key] = Rendition(prior.name, prior.scale, prior.width, prior.height, prior.crop,
                                   prior.canvas, (*prior.requested, size.label))
        else:
            found[key] = Rendition(_base_name(size, options.fit), scale, out_w, out_h, crop, canvas,
                                   (size.label,))
    return sorted(found.values(), key=lambda r: (-r.scale, r.name))


# ---------------------------------------------------------------------- decoding


@dataclass
class Source:
    image: Image.Image  # upright, mode L / RGB / RGBA, sRGB
    scale: float  # decoded size / upright full size (below 1 after JPEG draft)
    facts: dict[str, Any]


def _orientation(im: Image.Image, options: Options) -> int:
    if not options.auto_orient:
        return 1
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not fail the image; treat as upright
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _icc_to_srgb(im: Image.Image, facts: dict[str, Any]) -> Image.Image:
    """Convert pixels in an embedded ICC profile's space to sRGB (then drop the profile)."""
    icc = im.info.get("icc_profile")
    if not icc:
        return im
    from PIL import ImageCms

    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = (ImageCms.getProfileDescription(profile) or "").strip()
        space = profile.profile.xcolor_space.strip()
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        facts["icc_profile"] = f"ignored: unreadable ({exc})"
        return im
    facts["icc_profile"] = description or space
    if "srgb" in description.lower().replace(" ", "") and im.mode in ("RGB", "RGBA"):
        return im  # already sRGB: nothing to convert
    wanted = {"RGB": ("RGB",), "CMYK": ("CMYK",), "GRAY": ("L",)}.get(space, ())
    if im.mode not in wanted and not (space == "RGB" and im.mode == "RGBA"):
        facts["icc_profile"] += f" (ignored: does not match mode {im.mode})"
        return im
    out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
    try:
        converted = ImageCms.profileToProfile(im, profile, ImageCms.createProfile("sRGB"),
                                              renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode=out_mode)
    except ImageCms.PyCMSError as exc:
        facts["icc_profile"] += f" (ignored: {exc})"
        return im
    assert converted is not None
    converted.info.pop("icc_profile", None)
    facts["converted_to_srgb"] = True
    return converted


def _to_8bit(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> L, RGB or RGBA, keeping transparency and scaling 16-bit ranges."""
    mode = im.mode
    if mode in ("L", "RGB", "RGBA"):
        if mode != "RGBA" and "transparency" in im.info:
            return im.convert("RGBA")
        return im
    if mode in ("P", "PA"):
        return im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
    if mode in ("LA", "La"):
        return im.convert("RGBA")
    if mode == "RGBa":
        return im.convert("RGBA")
    if mode == "1":
        return im.convert("L")
    if mode.startswith("I") or mode == "F":
        wide = im.convert("F") if mode == "F" else im.convert("I")
        _low, high = wide.getextrema()
        assert isinstance(high, (int, float))
        if mode == "F" and high <= 1.0:
            factor = 255.0
        elif high <= 255:
            factor = 1.0
        elif high <= 65535 or mode.startswith("I;16"):
            factor = 1 / 257
        else:
            factor = 255 / high
        return wide.point(lambda v: v * factor).convert("L")
    return im.convert("RGB")  # CMYK without a profile, YCbCr, LAB, HSV, RGBX


# Formats whose fourth byte many writers leave 0 when they mean no alpha at all: read as
# transparency, every rendition of such a 32-bit BMP came out blank. An alpha channel that is
# 0 everywhere is padding there, as browsers (Chromium's BMP reader) take it.
ZERO_ALPHA_IS_PADDING = frozenset({"BMP", "DIB"})


def _drop_unused_alpha(im: Image.Image, fmt: str | None) -> Image.Image:
    """RGB where the alpha channel says nothing: opaque everywhere, or a BMP's zero padding."""
    if im.mode == "RGBA":
        low, high = im.getchannel("A").getextrema()
        if low == 255 or (high == 0 and fmt in ZERO_ALPHA_IS_PADDING):
            return im.convert("RGB")
    return im


def _normalize(im: Image.Image, orientation: int, facts: dict[str, Any]) -> Image.Image:
    """Decoded pixels -> upright 8-bit sRGB L/RGB/RGBA."""
    if im.mode == "CMYK" or (im.mode in ("RGB", "RGBA", "L") and im.info.get("icc_profile")):
        im = _icc_to_srgb(im, facts)
    im = _drop_unused_alpha(_to_8bit(im), facts.get("format"))
    if orientation in _TRANSPOSE:
        im = im.transpose(_TRANSPOSE[orientation])
    return im


def _draft_size(im: Image.Image, options: Options) -> tuple[int, int] | None:
    """The smallest stored size the largest rendition can be made from (JPEG DCT scaling).

    ``draft`` then decodes at 1/2, 1/4 or 1/8 scale, never below this size; EXIF
    orientation does not matter because scaling is the same on both axes.
    """
    if im.format not in ("JPEG", "MPO"):  # MPO: a JPEG with extra pictures (many phones)
        return None
    width, height = im.size
    orientation = _orientation(im, options)  # JPEG EXIF sits in the header: no pixel read
    upright = (height, width) if orientation in _ROTATES else (width, height)
    renditions = plan(*upright, options)
    scale = renditions[0].scale * DRAFT_GAP
    if scale >= 0.5:
        return None
    return math.ceil(width * scale), math.ceil(height * scale)


# Bytes per pixel of Pillow's storage by mode (RGB is stored in 4), plus a converted RGB(A)
# working copy for any other mode (alpha flattened on the background, palette expanded), times
# a margin, plus what the renditions and encoders hold (bounded: renditions are at most
# MAX_EDGE, 2048 px by default). Peak RSS growth measured on 16 and 64 Mpx PNGs: RGB 1.19 x
# the frame + 51 MB, RGBA 1.68 x the frame + 146 MB (tests/test_hostile_image.py checks it).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
_NO_WORKING_COPY = ("RGB", "L")
MEMORY_MARGIN = 1.25
RENDITIONS_MB = 150.0


def decode_memory_mb(width: int, height: int, mode: str) -> float:
    """Estimated MB that decoding one frame of this size and mode and making its renditions adds."""
    pixels = width * height
    working = 0 if mode in _NO_WORKING_COPY else 4 * pixels
    return (pixels * _MODE_BYTES.get(mode, 4) + working) * MEMORY_MARGIN / (1 << 20) + RENDITIONS_MB


def check_memory(im: Image.Image, options: Options) -> None:
    """Refuse, before any pixel is decoded, a frame that cannot fit in the function's memory:
    an out-of-memory kill is retried forever, a limit-exceeded record is not."""
    budget = options.memory_mb or config.function_memory_mb()
    width, height = im.size
    need = memory.resident_mb() + decode_memory_mb(width, height, im.mode)
    if need > budget:
        raise LimitExceeded(
            f"decoding this {width}x{height} {im.mode} image needs about {need:,.0f} MB, over the {budget:,} MB "
            "this function has (limit: memory); give the function more memory (MemorySize) or set max_pixels "
            "lower, then process it again (--retry-failed)", limit="memory")


def decode(fp: IO[bytes], fmt: str | None, options: Options,
           ctx: RunContext) -> tuple[Image.Image, Source, list[Rendition]]:
    """Open, check the pixel limit, draft, load, normalize the first frame, plan."""
    im = Image.open(fp, formats=[fmt] if fmt else None)  # only the decoder the content asked for
    width, height = im.size
    if width * height > options.max_pixels:
        raise LimitExceeded(
            f"the image is {width}x{height} = {width * height:,} pixels, over "
            f"max_pixels={options.max_pixels:,}; raise the max_pixels option to process it",
            limit="max_pixels")
    frames = int(getattr(im, "n_frames", 1) or 1)  # counting seeks: do it before pixels are loaded
    draft = _draft_size(im, options)
    if draft is not None:
        im.draft(im.mode, draft)
    check_memory(im, options)
    ctx.deadline.check(DEADLINE_MARGIN, doing="decoding the image")
    im.load()  # all pixels now, or an error: never a half-decoded rendition
    orientation = _orientation(im, options)
    upright = (height, width) if orientation in _ROTATES else (width, height)
    facts: dict[str, Any] = {
        "format": im.format, "mode": im.mode, "width": upright[0], "height": upright[1],
        "stored_width": width, "stored_height": height, "orientation": orientation,
        "frames": frames,
        "animated": bool(getattr(im, "is_animated", False)) and im.format in ANIMATABLE_INPUTS,
    }
    decoded = _normalize(im, orientation, facts)
    facts["has_alpha"] = decoded.mode == "RGBA"
    return im, Source(decoded, decoded.width / upright[0], facts), plan(*upright, options)


# ---------------------------------------------------------------------- resizing


def _resize(bases: list[tuple[Image.Image, float]], r: Rendition, upright: tuple[int, int]) -> Image.Image:
    """Make rendition ``r`` from the smallest base that still has enough pixels."""
    usable = [b for b in bases if b[1] >= r.scale - 1e-9]
    image, base_scale = min(usable, key=lambda b: b[1]) if usable else max(bases, key=lambda b: b[1])
    from_rendition = image is not bases[0][0]
    if r.crop is not None:
        box = tuple(v * base_scale for v in r.crop)
    else:
        box = (0.0, 0.0, upright[0] * base_scale, upright[1] * base_scale)
    box = (box[0], box[1], min(box[2], image.width), min(box[3], image.height))
    if (r.width, r.height) == image.size and box == (0, 0, image.width, image.height):
        out = image
    else:
        resample, gap = _resampling(box, r, from_rendition)
        out = image.resize((r.width, r.height), resample, box=box, reducing_gap=gap)
    return out


def _resampling(box: tuple[float, float, float, float], r: Rendition,
                from_rendition: bool) -> tuple[Image.Resampling, float]:
    """The filter and Pillow ``reducing_gap`` for one resize step, chosen for speed at no
    visible cost (figures: PSNR against a direct Lanczos from the full-size original, 24 Mpx
    photos; quality-85 JPEG's own error is ~40 dB):

    - an earlier rendition that is a whole multiple of this one (2048 -> 1024) is averaged
      n x n: it is already Lanczos-filtered, so the mean aligns exactly and aliases nothing
      (52-58 dB, half the time). The original may hold detail a box would alias (43 dB on
      grain) and other factors misalign the grid (37-43 dB at 3.2x): those are resampled.
    - a reduction by less than 2x (the JPEG decoded at 1/2 scale -> 2048) uses bicubic, as
      Pillow's own ``thumbnail()`` does: within 56 dB of Lanczos there, closer than the DCT
      scaling itself comes (52.7 dB), in 30% less time. Larger reductions and enlargements
      keep Lanczos, whose wider support matters there.
    """
    factor = (box[2] - box[0]) / r.width
    whole = round(factor)
    if from_rendition and whole >= 2 and abs(factor - whole) <= EXACT_FACTOR_SLACK * whole:
        return RESAMPLE, 1.0
    return (MILD_RESAMPLE if 1 < factor < 2 else RESAMPLE), REDUCING_GAP


def _pad(im: Image.Image, r: Rendition, background: tuple[int, int, int]) -> Image.Image:
    if r.canvas is None or r.canvas == im.size:
        return im
    fill: tuple[int, ...] | int
    if im.mode == "RGBA":
        fill = (0, 0, 0, 0)
    elif im.mode == "L":
        fill = round(0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2])
    else:
        fill = background
    canvas = Image.new(im.mode, r.canvas, fill)
    canvas.paste(im, ((r.canvas[0] - im.width) // 2, (r.canvas[1] - im.height) // 2))
    return canvas


def _flatten(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Alpha composited over ``background`` (JPEG has no alpha channel)."""
    if im.mode != "RGBA":
        return im
    flat = Image.new("RGB", im.size, background)
    flat.paste(im, mask=im.getchannel("A"))
    return flat


# ---------------------------------------------------------------------- encoding


def _save_args(fmt: str, options: Options) -> dict[str, Any]:
    if fmt == "jpeg":
        return {"format": "JPEG", "quality": options.quality, "optimize": False}
    if fmt == "webp":
        return {"format": "WEBP", "quality": options.quality, "method": 4}
    if fmt == "avif":
        return {"format": "AVIF", "quality": options.quality, "speed": 8}
    if fmt == "png":
        return {"format": "PNG", "compress_level": 6}
    return {"format": "GIF"}


def _metadata(im: Image.Image, source_info: dict[str, Any], options: Options, fmt: str) -> dict[str, Any]:
    """Nothing by default; with strip_metadata=false, EXIF (orientation reset) and sRGB tag."""
    if options.strip_metadata or fmt == "gif":
        return {}
    extra: dict[str, Any] = {}
    exif = source_info.get("exif")
    if exif:
        parsed = Image.Exif()
        with contextlib.suppress(Exception):
            parsed.load(exif)
            parsed[0x0112] = 1
            extra["exif"] = parsed.tobytes()
    if fmt in ("jpeg", "webp", "png", "avif"):
        from PIL import ImageCms

        extra["icc_profile"] = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return extra


def _encode(out: OutputDir, name: str, fmt: str, im: Image.Image, options: Options,
            info: dict[str, Any], facts: dict[str, Any]) -> None:
    image = _flatten(im, options.background_rgb) if fmt == "jpeg" else im
    image.info = {}
    with out.open(f"{name}.{EXTENSIONS[fmt]}", MEDIA_TYPES[fmt], **facts) as f:
        image.save(f, **_save_args(fmt, options), **_metadata(im, info, options, fmt))


def _animated(im: Image.Image, renditions: list[Rendition], orientation: int, options: Options,
              ctx: RunContext) -> tuple[dict[str, list[Image.Image]], list[int], int]:
    """Every frame, composited and upright, resized to each rendition (frames decoded once)."""
    n_frames = int(getattr(im, "n_frames", 1))
    if n_frames > options.max_frames:
        raise LimitExceeded(f"the animation has {n_frames} frames, over max_frames={options.max_frames}; "
                            "raise the max_frames option or set animated=false", limit="max_frames")
    per_rendition: dict[str, list[Image.Image]] = {r.name: [] for r in renditions}
    durations: list[int] = []
    for index in range(n_frames):
        ctx.deadline.check(DEADLINE_MARGIN, doing="decoding animation frames")
        im.seek(index)
        frame = im.convert("RGBA")
        if orientation in _TRANSPOSE:
            frame = frame.transpose(_TRANSPOSE[orientation])
        bases = [(frame, 1.0)]
        for r in renditions:
            resized = _pad(_resize(bases, r, frame.size), r, options.background_rgb)
            per_rendition[r.name].append(resized)
            if r.crop is None and r.canvas is None:
                bases.append((resized, r.scale))
        durations.append(int(im.info.get("duration", 100) or 100))
    loop = int(im.info.get("loop", 0) or 0)
    return per_rendition, durations, loop


# ---------------------------------------------------------------------- placeholder


def _placeholder(im: Image.Image, background: tuple[int, int, int]) -> dict[str, Any]:
    """A BlurHash and the dominant colour, from a thumbnail of the smallest rendition."""
    from workers.image_resize.placeholder import blurhash, components_for

    tiny = _flatten(im, background).convert("RGB")
    tiny.thumbnail((PLACEHOLDER_EDGE, PLACEHOLDER_EDGE), Image.Resampling.BOX)
    cx, cy = components_for(*tiny.size)
    palette = tiny.quantize(colors=5, method=Image.Quantize.MEDIANCUT)
    counts: list[tuple[int, int]] = sorted(palette.getcolors() or [], reverse=True)  # type: ignore[arg-type]
    pal = palette.getpalette() or []
    index = counts[0][1] if counts else 0
    r, g, b = ([*pal[index * 3:index * 3 + 3], 0, 0, 0])[:3]
    return {"blurhash": blurhash(tiny.tobytes(), tiny.width, tiny.height, cx, cy),
            "dominant_color": f"#{r:02x}{g:02x}{b:02x}"}


# ---------------------------------------------------------------------- entry point


def process(source: InputFile, out: OutputDir, options: Options, ctx: RunContext) -> dict[str, Any]:
    """Make every rendition of ``source``; return the source facts for the manifest."""
    _check_encoders(options)
    if source.size == 0:
        raise CorruptInput("the file is empty (0 bytes)", code=EMPTY_INPUT)
    with source.open() as fp:
        fmt = detect_format(fp.read(64))
        fp.seek(0)
        if fmt is None:
            raise UnsupportedInput("not an image format this worker takes (JPEG, PNG, GIF, WebP, TIFF, BMP, "
                                   "AVIF, HEIC); the content was checked, not the file name")
        _register_decoders(fmt)
        with _translate_errors(fmt, options):
            im, src, renditions = decode(fp, fmt, options, ctx)
            facts = src.facts
            orientation = facts["orientation"]
            upright = (facts["width"], facts["height"])
            animate = (options.animated and facts["animated"]
                       and any(f in ANIMATED_FORMATS for f in options.formats))
            frames: dict[str, list[Image.Image]] = {}
            durations: list[int] = []
            loop = 0
            if animate:
                if src.image is im:
                    src.image = im.copy()  # seeking to other frames must not change the first
                frames, durations, loop = _animated(im, renditions, orientation, options, ctx)
            info: dict[str, Any] = {k: v for k, v in im.info.items() if isinstance(k, str)}

    bases = [(src.image, src.scale)]
    for r in renditions:
        ctx.deadline.check(DEADLINE_MARGIN, doing=f"making rendition {r.name}")
        resized = _resize(bases, r, upright)
        if r.crop is None and r.canvas is None:
            bases.append((resized, r.scale))
        image = _pad(resized, r, options.background_rgb)
        for fmt_name in options.formats:
            facts_out = {"width": image.width, "height": image.height, "format": fmt_name,
                         "fit": options.fit, "requested": list(r.requested)}
            if animate and fmt_name in ANIMATED_FORMATS:
                seq = frames[r.name]
                facts_out["frames"] = len(seq)
                _encode_animation(out, r.name, fmt_name, seq, durations, loop, options, facts_out)
            else:
                _encode(out, r.name, fmt_name, image, options, info, facts_out)
    facts.update(_placeholder(min(bases, key=lambda b: b[1])[0], options.background_rgb))
    facts["renditions"] = len(renditions) * len(options.formats)
    return {"source": facts}


def _encode_animation(out: OutputDir, name: str, fmt: str, seq: list[Image.Image], durations: list[int],
                      loop: int, options: Options, facts: dict[str, Any]) -> None:
    with out.open(f"{name}.{EXTENSIONS[fmt]}", MEDIA_TYPES[fmt], **facts) as f:
        first, rest = seq[0], seq[1:]
        args: dict[str, Any] = {"save_all": True, "append_images": rest, "duration": durations, "loop": loop}
        if fmt == "webp":
            args.update(format="WEBP", quality=options.quality, method=4)
        else:
            args.update(format="GIF", disposal=2)
        first.save(f, **args)
