"""image-resize on generated inputs: every failure mode the issue names, through the runtime.

Inputs are made here with Pillow (no corpus needed); broken ones by editing good bytes.
Most tests go through ``mountworks run`` in-process (the real claim/commit path); a few
through the Lambda handler with real event payloads.
"""

from __future__ import annotations

import copy
import io
import json
import random
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, Put, load_event
from PIL import Image, ImageCms, ImageDraw

from shared.errors import UsageError
from workers.cli import LocalContext, main
from workers.image_resize import SPEC
from workers.image_resize.options import parse
from workers.image_resize.placeholder import blurhash, decode_dc
from workers.image_resize.sniff import detect_format

# ------------------------------------------------------------------------- helpers


def jpeg(im: Image.Image, **kw: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def png(im: Image.Image, **kw: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def noise(size: tuple[int, int], seed: int = 7) -> Image.Image:
    rnd = random.Random(seed)
    return Image.frombytes("RGB", size, bytes(rnd.getrandbits(8) for _ in range(size[0] * size[1] * 3)))


Run = Callable[..., tuple[int, dict[str, Any]]]


@pytest.fixture
def run(put: Put, cli: Cli) -> Run:
    """``run(name, data, *options)``: write ``ingest/<name>`` and run the worker on it through the CLI."""

    def _run(name: str, data: bytes, *options: str) -> tuple[int, dict[str, Any]]:
        return cli.run("image-resize", put(name, data), *options)

    return _run


def outputs(mount: Path, record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Output entries by file name, each with its decoded image under ``"image"``.

    Never empty: the tests loop over it, and a loop over nothing would check nothing."""
    assert record["outputs"], f"the run lists no renditions: {record}"
    found = {}
    for entry in record["outputs"]:
        im = Image.open(io.BytesIO((mount / entry["path"]).read_bytes()))  # no file left open (animated)
        im.load()
        found[Path(entry["path"]).name] = {**entry, "image": im}
    return found


def near(a: tuple[int, ...], b: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def upright_marker() -> Image.Image:
    """80x40, red in the top-left quarter, blue elsewhere: shows which way is up."""
    im = Image.new("RGB", (80, 40), (0, 0, 255))
    ImageDraw.Draw(im).rectangle((0, 0, 39, 19), fill=(255, 0, 0))
    return im


# How to store the upright image so that the EXIF tag turns it back upright.
STORED_AS = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


# ------------------------------------------------------------------------- orientation


@pytest.mark.parametrize("tag", [3, 6, 8], ids=["rotate-180", "rotate-90-cw", "rotate-90-ccw"])
def test_exif_orientation_gives_upright_output(mount: Path, run: Run, tag: int) -> None:
    stored = upright_marker().transpose(STORED_AS[tag])
    code, record = run(f"o{tag}.jpg", jpeg(stored, exif=exif_orientation(tag)))
    assert code == 0
    source = record["facts"]["source"]
    assert (source["orientation"], source["width"], source["height"]) == (tag, 80, 40)
    assert (source["stored_width"], source["stored_height"]) == stored.size
    for name, out in outputs(mount, record).items():
        im = out["image"].convert("RGB")
        assert im.size == (80, 40), name
        assert near(im.getpixel((8, 4)), (255, 0, 0), 40), name  # top-left stays red
        assert near(im.getpixel((70, 34)), (0, 0, 255), 40), name
        assert "exif" not in out["image"].info, f"{name}: metadata must be stripped"


def test_auto_orient_can_be_turned_off(mount: Path, run: Run) -> None:
    stored = upright_marker().transpose(STORED_AS[6])
    code, record = run("o.jpg", jpeg(stored, exif=exif_orientation(6)), "auto_orient=false")
    assert code == 0
    assert outputs(mount, record)["w320.jpg"]["image"].size == (40, 80)


# ------------------------------------------------------------------------- colour and modes


def test_cmyk_jpeg_becomes_rgb(mount: Path, run: Run) -> None:
    cmyk = Image.new("CMYK", (64, 48), (0, 255, 255, 0))  # red ink
    code, record = run("cmyk.jpg", jpeg(cmyk))
    assert code == 0
    assert record["facts"]["source"]["mode"] == "CMYK"
    for out in outputs(mount, record).values():
        assert out["image"].mode == "RGB"
        assert near(out["image"].getpixel((32, 24)), (255, 0, 0), 20)


def test_16bit_grey_png_is_scaled_not_clipped(mount: Path, run: Run) -> None:
    grey = Image.new("I;16", (32, 32), 32768)  # mid grey; a naive convert("L") clips it to white
    code, record = run("g16.png", png(grey), "formats=png")
    assert code == 0
    assert record["facts"]["source"]["mode"] == "I;16"
    (out,) = outputs(mount, record).values()
    assert out["image"].mode == "L"
    assert abs(out["image"].getpixel((5, 5)) - 128) <= 1


def test_palette_with_trns_keeps_transparency(mount: Path, run: Run) -> None:
    pal = Image.new("P", (40, 20), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    ImageDraw.Draw(pal).rectangle((20, 0, 39, 19), fill=1)  # right half red, left half index 0
    code, record = run("p.png", png(pal, transparency=0),
                       "formats=jpeg,webp,png", "background=#00ff00")
    assert code == 0
    assert record["facts"]["source"]["has_alpha"] is True
    found = outputs(mount, record)
    for name in ("w320.webp", "w320.png"):
        im = found[name]["image"].convert("RGBA")
        assert im.getpixel((5, 10))[3] == 0, name
        assert near(im.getpixel((35, 10)), (255, 0, 0, 255), 8), name
    flat = found["w320.jpg"]["image"]
    assert near(flat.getpixel((5, 10)), (0, 255, 0), 20)  # the background option, not black
    assert near(flat.getpixel((35, 10)), (255, 0, 0), 20)


@pytest.mark.parametrize(("background", "expected"), [(None, (255, 255, 255)), ("#ff0000", (255, 0, 0)),
                                                      ("black", (0, 0, 0))], ids=["default-white", "red", "black"])
def test_rgba_is_flattened_on_the_background_for_jpeg(mount: Path, run: Run,
                                                       background: str | None, expected: tuple[int, int, int]) -> None:
    im = Image.new("RGBA", (60, 30), (0, 0, 0, 0))
    ImageDraw.Draw(im).rectangle((30, 0, 59, 29), fill=(0, 0, 255, 255))
    opts = [f"background={background}"] if background else []
    code, record = run("a.png", png(im), *opts)
    assert code == 0
    found = outputs(mount, record)
    assert near(found["w320.jpg"]["image"].getpixel((5, 15)), expected, 10)
    assert near(found["w320.jpg"]["image"].getpixel((50, 15)), (0, 0, 255), 20)
    assert found["w320.webp"]["image"].mode == "RGBA"  # WebP keeps the alpha


def swapped_primaries_profile() -> bytes:
    """An RGB ICC profile whose red and green primaries are swapped: not sRGB at all.

    Converting its pure red to sRGB must give green; a worker that drops or ignores
    the profile keeps red.
    """
    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    count = struct.unpack(">I", data[128:132])[0]
    tags = {}
    for i in range(count):
        sig, offset, size = struct.unpack(">4sII", data[132 + 12 * i:144 + 12 * i])
        tags[sig] = (i, offset, size)
    for this, other in ((b"rXYZ", b"gXYZ"), (b"gXYZ", b"rXYZ")):
        entry = 132 + 12 * tags[this][0]
        data[entry + 4:entry + 12] = struct.pack(">II", *tags[other][1:])
    return bytes(data).replace("sRGB".encode("utf-16-be"), "Swap".encode("utf-16-be"))


def test_icc_profile_is_converted_to_srgb_and_dropped(mount: Path, run: Run) -> None:
    red = Image.new("RGB", (50, 40), (255, 0, 0))
    code, record = run("icc.png", png(red, icc_profile=swapped_primaries_profile()),
                       "formats=png,jpeg")
    assert code == 0
    assert record["facts"]["source"]["converted_to_srgb"] is True
    for name, out in outputs(mount, record).items():
        assert "icc_profile" not in out["image"].info, name
        assert near(out["image"].convert("RGB").getpixel((10, 10)), (0, 255, 0), 20), name


def test_srgb_profile_is_kept_as_is_and_metadata_can_be_kept(mount: Path,
                                                             run: Run) -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = jpeg(Image.new("RGB", (50, 40), (200, 100, 50)), icc_profile=srgb, exif=exif_orientation(1))
    code, record = run("s.jpg", src, "strip_metadata=false", "formats=jpeg")
    assert code == 0
    assert "converted_to_srgb" not in record["facts"]["source"]
    (out,) = outputs(mount, record).values()
    assert out["image"].info.get("icc_profile")  # kept on request, as sRGB
    assert out["image"].getexif().get(0x0112) == 1


# ------------------------------------------------------------------------- animation and pages


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=[100, 200, 300], loop=0)
    return buf.getvalue()


def test_animated_gif_gives_its_first_frame_by_default(mount: Path, run: Run) -> None:
    code, record = run("anim.gif", animated_gif())
    assert code == 0
    assert record["facts"]["source"]["frames"] == 3
    assert record["facts"]["source"]["animated"] is True
    for out in outputs(mount, record).values():
        assert getattr(out["image"], "n_frames", 1) == 1
        assert near(out["image"].convert("RGB").getpixel((5, 5)), (255, 0, 0), 12)


def test_animated_option_keeps_every_frame_in_webp_and_gif(mount: Path,
                                                           run: Run) -> None:
    code, record = run("anim.gif", animated_gif(), "animated=true", "formats=jpeg,webp,gif")
    assert code == 0
    found = outputs(mount, record)
    for name in ("w320.webp", "w320.gif"):
        im = found[name]["image"]
        assert im.n_frames == 3 and found[name]["frames"] == 3, name
        im.seek(2)
        assert near(im.convert("RGB").getpixel((5, 5)), (0, 0, 255), 12), name
    assert getattr(found["w320.jpg"]["image"], "n_frames", 1) == 1


def test_mpo_from_a_phone_gives_its_first_picture(mount: Path, run: Run) -> None:
    """MPO (a JPEG followed by more pictures: many phones and 3D cameras) is read as its
    first picture, decoded at reduced scale like any JPEG, never as an animation."""
    first = Image.new("RGB", (2400, 1600), (200, 30, 30))
    second = Image.new("RGB", (2400, 1600), (30, 200, 30))
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=[second], quality=90)
    code, record = run("stereo.jpg", buf.getvalue(), "sizes=320,1024", "animated=true")
    assert code == 0
    source = record["facts"]["source"]
    assert source["format"] == "MPO" and source["frames"] == 2 and not source["animated"]
    for name, out in outputs(mount, record).items():
        assert near(out["image"].convert("RGB").getpixel((10, 10)), (200, 30, 30)), name  # the first picture
        assert getattr(out["image"], "n_frames", 1) == 1, name


def test_multipage_tiff_gives_its_first_page(mount: Path, run: Run) -> None:
    pages = [Image.new("RGB", (30, 20), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    pages[0].save(buf, "TIFF", save_all=True, append_images=pages[1:])
    code, record = run("pages.tif", buf.getvalue())
    assert code == 0
    assert record["facts"]["source"]["frames"] == 2 and record["facts"]["source"]["animated"] is False
    assert near(outputs(mount, record)["w320.jpg"]["image"].getpixel((5, 5)), (255, 0, 0), 12)


# ------------------------------------------------------------------------- sizes and fits


def test_never_upscales_and_deduplicates(mount: Path, run: Run) -> None:
    code, record = run("small.jpg", jpeg(noise((100, 50))))
    assert code == 0
    found = outputs(mount, record)
    assert sorted(found) == ["w320.jpg", "w320.webp"]  # 320, 1024 and 2048 all give the source size
    for out in found.values():
        assert out["image"].size == (100, 50)
        assert out["requested"] == ["320", "1024", "2048"]


def test_upscale_when_asked(mount: Path, run: Run) -> None:
    code, record = run("small.jpg", jpeg(noise((100, 50))), "upscale=true", "sizes=200,400")
    assert code == 0
    sizes = {name: out["image"].size for name, out in outputs(mount, record).items()}
    assert sizes == {"w400.jpg": (400, 200), "w400.webp": (400, 200), "w200.jpg": (200, 100),
                     "w200.webp": (200, 100)}


def test_default_renditions_of_a_large_photo(mount: Path, run: Run) -> None:
    code, record = run("big.jpg", jpeg(noise((3000, 1000)).resize((3000, 2000))))
    assert code == 0
    sizes = {name: (out["image"].size, out["media_type"]) for name, out in outputs(mount, record).items()}
    assert sizes == {
        "w2048.jpg": ((2048, 1365), "image/jpeg"), "w2048.webp": ((2048, 1365), "image/webp"),
        "w1024.jpg": ((1024, 683), "image/jpeg"), "w1024.webp": ((1024, 683), "image/webp"),
        "w320.jpg": ((320, 213), "image/jpeg"), "w320.webp": ((320, 213), "image/webp"),
    }
    assert record["facts"]["source"]["renditions"] == 6


def photo_like(size: tuple[int, int]) -> Image.Image:
    """Gradients, sharp-edged shapes and grain: enough detail for resampling errors to show."""
    rnd = random.Random(3)
    im = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(im)
    for _ in range(40):
        x, y, r = rnd.randrange(size[0]), rnd.randrange(size[1]), rnd.randrange(10, size[0] // 6)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    return Image.blend(im, noise(size).resize(size), 0.1)


def psnr(a: Image.Image, b: Image.Image) -> float:
    import numpy as np

    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(10 * np.log10(255 ** 2 / max(float(np.mean(diff ** 2)), 1e-12)))


@pytest.mark.slow
def test_renditions_made_from_each_other_match_a_direct_lanczos(mount: Path,
                                                                run: Run) -> None:
    """Each rendition comes from the previous one (2048 -> 1024 as a 2x2 box average), mild
    reductions use bicubic: the shortcuts must not cost visible quality against resizing
    the original directly with Lanczos."""
    source = photo_like((4096, 2730))
    code, record = run("photo.png", png(source), "formats=png")
    assert code == 0
    for name, out in outputs(mount, record).items():
        direct = source.resize(out["image"].size, Image.Resampling.LANCZOS)
        assert psnr(out["image"].convert("RGB"), direct) >= 44, name  # w1024: 45.2 dB; an aliasing step: 37-43
    code, record = run("photo-3000.png", png(source.resize((3000, 2000))), "formats=png")
    assert code == 0
    out = outputs(mount, record)["w2048.png"]["image"]  # 3000 -> 2048: a reduction under 2x, bicubic
    assert psnr(out.convert("RGB"), source.resize((3000, 2000)).resize((2048, 1365), Image.Resampling.LANCZOS)) >= 50


def test_each_resize_step_gets_the_cheapest_filter_that_keeps_quality() -> None:
    from PIL.Image import Resampling

    from workers.image_resize.core import REDUCING_GAP, Rendition, _resampling

    def rendition(width: int) -> Rendition:
        return Rendition("r", 0.5, width, width, None, None, ())

    lanczos, bicubic = Resampling.LANCZOS, Resampling.BICUBIC
    assert _resampling((0, 0, 2048, 1365), rendition(1024), True) == (lanczos, 1.0)  # 2x: an aligned 2x2 mean
    assert _resampling((0, 0, 3000, 2000), rendition(1000), True) == (lanczos, 1.0)
    assert _resampling((0, 0, 4096, 2730), rendition(2048), False) == (lanczos, REDUCING_GAP)  # the original
    assert _resampling((0, 0, 1024, 683), rendition(320), True) == (lanczos, REDUCING_GAP)  # 3.2x: no box step
    assert _resampling((0, 0, 3000, 2000), rendition(2048), False) == (bicubic, REDUCING_GAP)  # under 2x
    assert _resampling((0, 0, 1024, 683), rendition(2048), False) == (lanczos, REDUCING_GAP)  # enlarging


@pytest.mark.parametrize(("fit", "size", "expected_name", "expected_size"), [
    ("cover", "320x240", "320x240-cover.jpg", (320, 240)),
    ("contain", "320x240", "320x240-contain.jpg", (320, 240)),
    ("inside", "320x240", "320x240.jpg", (320, 160)),
    ("cover", "100", "100x100-cover.jpg", (100, 100)),
    ("cover", "1000x1000", "1000x1000-cover.jpg", (400, 400)),  # no upscale: the box shrinks
], ids=["cover", "contain", "inside-box", "cover-square", "cover-no-upscale"])
def test_fits(mount: Path, run: Run, fit: str, size: str, expected_name: str,
              expected_size: tuple[int, int]) -> None:
    src = Image.new("RGB", (800, 400), (0, 0, 255))
    ImageDraw.Draw(src).rectangle((0, 0, 199, 399), fill=(255, 0, 0))  # red left quarter
    code, record = run("wide.png", png(src), f"fit={fit}", f"sizes={size}", "formats=jpeg",
                       "background=#00ff00")
    assert code == 0
    found = outputs(mount, record)
    assert list(found) == [expected_name]
    im = found[expected_name]["image"]
    assert im.size == expected_size
    if fit == "cover":  # centre crop: the red quarter is (mostly) cut away, the centre is blue
        assert near(im.getpixel((im.width // 2, im.height // 2)), (0, 0, 255), 20)
    if fit == "contain":  # padded top and bottom with the background colour
        assert near(im.getpixel((160, 5)), (0, 255, 0), 20)
        assert near(im.getpixel((5, 120)), (255, 0, 0), 20)


# ------------------------------------------------------------------------- hostile and broken inputs


def png_declaring(width: int, height: int) -> bytes:
    """A valid small PNG whose IHDR (with a correct CRC) claims ``width`` x ``height``."""
    data = bytearray(png(Image.new("RGB", (8, 8), (1, 2, 3))))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def gif_declaring(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("P", (8, 8)).save(buf, "GIF")
    data = bytearray(buf.getvalue())
    data[6:10] = struct.pack("<HH", width, height)  # logical screen
    start = data.index(b"\x2c")  # image descriptor
    data[start + 5:start + 9] = struct.pack("<HH", width, height)
    return bytes(data)


@pytest.mark.parametrize(("name", "data", "options"), [
    ("bomb.png", png_declaring(30000, 30000), ()),
    ("bomb.gif", gif_declaring(65535, 65535), ()),
    ("just-over.png", png(Image.new("RGB", (100, 100))), ("max_pixels=6000",)),  # Pillow only warns here
    ("just-over-error.png", png(Image.new("RGB", (100, 100))), ("max_pixels=4000",)),
], ids=["png-30000x30000", "gif-65535x65535", "option-warning-path", "option-error-path"])
def test_decompression_bomb_is_a_permanent_limit(mount: Path, run: Run, name: str,
                                                 data: bytes, options: tuple[str, ...]) -> None:
    code, record = run(name, data, *options)
    assert code == 3
    assert record["error"]["code"] == "limit-exceeded"
    assert record["error"]["limit"] == "max_pixels"
    assert "max_pixels" in record["error"]["message"]
    run_dir = mount / "workspace" / "image-resize" / name / record["run_id"]
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".claim")) == ["error.json"]


@pytest.mark.parametrize(("name", "make"), [
    ("cut.jpg", lambda: jpeg(noise((200, 150)))),
    ("cut.png", lambda: png(noise((200, 150)))),
    ("cut.webp", lambda: _webp(noise((200, 150)))),
], ids=["jpeg", "png", "webp"])
def test_truncated_file_is_corrupt_input_with_no_rendition(mount: Path, run: Run,
                                                           name: str, make: Any) -> None:
    good: bytes = make()
    code, record = run(name, good[: len(good) * 6 // 10])
    assert code == 3
    assert record["error"]["code"] == "corrupt-input"
    run_dir = mount / "workspace" / "image-resize" / name / record["run_id"]
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".claim")) == ["error.json"]


def _webp(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "WEBP", quality=80)
    return buf.getvalue()


def _bmp_variant(compression: int, bits: int) -> bytes:
    """A valid BMP's headers rewritten to a variant Pillow has no decoder for."""
    buf = io.BytesIO()
    noise((16, 8)).save(buf, "BMP")
    data = bytearray(buf.getvalue())
    data[28:30] = bits.to_bytes(2, "little")  # BITMAPINFOHEADER biBitCount
    data[30:34] = compression.to_bytes(4, "little")  # biCompression
    return bytes(data)


@pytest.mark.parametrize(("compression", "bits"), [(6, 32), (4, 0), (0, 2)],
                         ids=["alpha-bitfields", "embedded-jpeg", "2-bit"])
def test_a_bmp_variant_pillow_cannot_read_is_unsupported_not_corrupt(mount: Path, run: Run, compression: int,
                                                                     bits: int) -> None:
    """Valid BMPs of the BMP suite's kinds (BI_ALPHABITFIELDS, an embedded JPEG, 2 bits per
    pixel) that Pillow has no decoder for: the file is not damaged, and converting it helps."""
    code, record = run("variant.bmp", _bmp_variant(compression, bits))
    assert code == 3
    assert record["error"]["code"] == "unsupported-format"
    assert "Unsupported BMP" in record["error"]["message"] and "convert it" in record["error"]["message"]


def _bmp_32_bit(alpha: int, size: tuple[int, int] = (16, 8)) -> bytes:
    """A 32-bit BMP with an alpha mask (BITMAPV4HEADER, BI_BITFIELDS), every pixel's alpha
    byte ``alpha``: colours from red to blue across, green down."""
    width, height = size
    pixels = b"".join(bytes((255 * x // (width - 1), 255 * y // (height - 1), 255 - 255 * x // (width - 1), alpha))
                      for y in range(height) for x in range(width))  # B, G, R, A
    info = struct.pack("<IiiHHIIiiII", 108, width, height, 1, 32, 3, len(pixels), 2835, 2835, 0, 0)
    info += struct.pack("<4I", 0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000) + bytes(108 - 56)
    return struct.pack("<2sIHHI", b"BM", 14 + len(info) + len(pixels), 0, 0, 14 + len(info)) + info + pixels


def test_a_bmp_whose_alpha_is_zero_everywhere_is_opaque_not_blank(mount: Path, run: Run) -> None:
    """Many writers leave a 32-bit BMP's fourth byte 0: read as transparency, each rendition
    was blank (the background colour). Partial alpha in a BMP, and a fully transparent PNG,
    keep their transparency."""
    code, record = run("padded.bmp", _bmp_32_bit(alpha=0))
    assert code == 0 and record["facts"]["source"]["has_alpha"] is False
    for found in outputs(mount, record).values():
        rgb = found["image"].convert("RGB")
        left, right = rgb.getpixel((0, rgb.height // 2)), rgb.getpixel((rgb.width - 1, rgb.height // 2))
        assert isinstance(left, tuple) and isinstance(right, tuple)
        assert left[0] > 200 and left[2] < 60 and right[2] > 200 and right[0] < 60, (found["path"], left, right)
    code, record = run("half.bmp", _bmp_32_bit(alpha=128))
    assert code == 0 and record["facts"]["source"]["has_alpha"] is True
    code, record = run("clear.png", png(Image.new("RGBA", (16, 8), (200, 30, 40, 0))))
    assert code == 0 and record["facts"]["source"]["has_alpha"] is True


def test_a_damaged_avif_is_corrupt_input_not_our_bug(mount: Path, run: Run) -> None:
    """Pillow's AVIF decoder fails with RuntimeError, which was an internal error (a bug of
    ours, retried by Lambda) for every AVIF whose AV1 data is damaged."""
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF decoder")
    buf = io.BytesIO()
    noise((64, 48)).save(buf, "AVIF", quality=60)
    data = bytearray(buf.getvalue())
    start = data.find(b"mdat") + 4
    data[start:] = bytes(len(data) - start)  # the AV1 payload zeroed: boxes intact, pixels gone
    code, record = run("damaged.avif", bytes(data))
    assert code == 3
    assert record["error"]["code"] == "corrupt-input" and "cannot be decoded" in record["error"]["message"]


def test_a_runtime_error_of_our_own_code_stays_an_internal_error(mount: Path, run: Run,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what leaves Pillow is the input's: the same exception from our code is a bug."""
    import workers.image_resize.core as core

    def broken(*args: Any) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(core, "_normalize", broken)
    code, _ = run("fine.png", png(noise((20, 20))))
    assert code == 1


def test_avif_and_png_outputs_round_trip(mount: Path, run: Run) -> None:
    from PIL import features

    if not features.check("avif"):
        code, _ = run("a.jpg", jpeg(noise((64, 48))), "formats=avif")
        assert code == 2  # a clear usage error where this Pillow has no AVIF encoder
        return
    code, record = run("a.jpg", jpeg(noise((64, 48))), "formats=avif,png")
    assert code == 0
    found = outputs(mount, record)
    assert {n: (o["image"].format, o["media_type"]) for n, o in found.items()} == {
        "w320.avif": ("AVIF", "image/avif"), "w320.png": ("PNG", "image/png")}
    avif = found["w320.avif"]["image"]
    assert avif.size == (64, 48)
    # and AVIF decodes as an input, recognised by its ftyp brand
    code, again = run("again.bin", (mount / record["outputs"][0]["path"]).read_bytes()
                      if record["outputs"][0]["format"] == "avif"
                      else (mount / record["outputs"][1]["path"]).read_bytes())
    assert code == 0
    assert again["facts"]["source"]["format"] == "AVIF"


def test_format_comes_from_content_not_name(mount: Path, run: Run) -> None:
    code, record = run("really-a-jpeg.png", jpeg(noise((40, 30))))
    assert code == 0
    assert record["facts"]["source"]["format"] == "JPEG"


def test_an_empty_file_is_empty_input_as_with_every_worker(mount: Path, run: Run) -> None:
    code, record = run("nothing.jpg", b"")
    assert code == 3 and record["error"]["code"] == "empty-input"


def test_non_image_with_image_name_is_unsupported(mount: Path, run: Run) -> None:
    code, record = run("notes.jpg", b"these are just words, not a picture\n" * 4)
    assert code == 3
    assert record["error"]["code"] == "unsupported-format"


def test_damaged_header_of_a_known_format_is_unsupported_or_corrupt(mount: Path,
                                                                    run: Run) -> None:
    data = bytearray(png(noise((20, 20))))
    data[12:16] = b"XXXX"  # IHDR renamed: the magic says PNG, the content is not one
    code, record = run("bad.png", bytes(data))
    assert code == 3
    assert record["error"]["code"] in ("unsupported-format", "corrupt-input")


@pytest.mark.parametrize("option", ["sizes=1000000000", "bogus=1", "fit=bogus", "formats=tiff", "quality=0",
                                    "sizes=32x", "background=teal-ish", "max_pixels=0"],
                         ids=["huge-width", "unknown-key", "bad-fit", "bad-format", "bad-quality",
                              "bad-box", "bad-colour", "zero-limit"])
def test_bad_options_are_usage_errors(mount: Path, run: Run, option: str) -> None:
    code, _ = run("a.jpg", jpeg(noise((20, 20))), option)
    assert code == 2
    assert not (mount / "workspace").exists()


def test_options_normalize_for_a_stable_run_id() -> None:
    a = parse({"sizes": "1024,320", "formats": ["webp", "JPG"], "fit": "INSIDE"}).to_manifest()
    b = parse({"sizes": [320, 1024], "formats": "jpeg,webp"}).to_manifest()
    assert a == b
    with pytest.raises(UsageError, match="sizes"):
        parse({"sizes": ",".join(str(i) for i in range(1, 20))})


# ------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize(("head", "expected"), [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "PNG"),
    (b"GIF89a\x01\x00", "GIF"),
    (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "WEBP"),
    (b"II*\x00\x08\x00\x00\x00", "TIFF"),
    (b"MM\x00*\x00\x00\x00\x08", "TIFF"),
    (b"BM\x00\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00", "BMP"),
    (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "AVIF"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIF"),
    (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avifmiaf", "AVIF"),
    (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", "HEIF"),
    (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", None),  # an MP4 is not ours
    (b"%PDF-1.7\n", None),
    (b"BMx not a bitmap header", None),
], ids=["jpeg", "png", "gif", "webp", "tiff-le", "tiff-be", "bmp", "avif", "heic", "mif1-avif", "mif1-heic",
        "mp4", "pdf", "bm-text"])
def test_sniff(head: bytes, expected: str | None) -> None:
    assert detect_format(head) == expected
    assert SPEC.accepts(head) is (expected is not None)


# ------------------------------------------------------------------------- placeholder facts


def test_blurhash_matches_the_reference_encoder() -> None:
    # Values computed with the reference Python port (pip package ``blurhash``) on the same pixels.
    w, h = 16, 12
    pixels = bytes(v for y in range(h) for x in range(w) for v in ((x * 16) % 256, (y * 20) % 256, (x * y * 7) % 256))
    assert blurhash(pixels, w, h, 4, 3) == "LsGuUZ2,wsouqeR%jse?f_fjfTfl"
    w, h = 9, 13
    pixels = bytes(v for y in range(h) for x in range(w)
                   for v in ((x * 31 + y * 7) % 256, (y * 20) % 256, (255 - x * y * 3) % 256))
    assert blurhash(pixels, w, h, 3, 5) == "c+G+R:O_A_qqI@sQkYW,sUs?W=a{j2WUn~"


def test_blurhash_and_dominant_colour_are_plausible(mount: Path, run: Run) -> None:
    im = Image.new("RGB", (300, 200), (20, 160, 40))
    ImageDraw.Draw(im).rectangle((0, 0, 40, 40), fill=(250, 250, 250))  # a small white patch
    code, record = run("green.png", png(im))
    assert code == 0
    facts = record["facts"]["source"]
    assert near(tuple(int(facts["dominant_color"][i:i + 2], 16) for i in (1, 3, 5)), (20, 160, 40), 6)
    assert len(facts["blurhash"]) == 6 + 2 * (4 * 3 - 1)  # 4x3 components for a landscape image
    assert facts["blurhash"][0] == "L"  # (4 - 1) + (3 - 1) * 9 = 21 in base 83
    assert near(decode_dc(facts["blurhash"]), (20, 160, 40), 40)


# ------------------------------------------------------------------------- end to end


def test_cli_run_commits_verifies_and_reports_already_done(mount: Path, capsys: pytest.CaptureFixture[str],
                                                           run: Run) -> None:
    code, first = run("photos/cat.jpg", jpeg(noise((640, 480))))
    assert code == 0
    assert first["input"]["path"] == "ingest/photos/cat.jpg"
    assert first["outputs"]
    for entry in first["outputs"]:
        assert (mount / entry["path"]).is_file()
        assert entry["path"].startswith(f"workspace/image-resize/photos/cat.jpg/{first['run_id']}/")
    assert main(["run", "image-resize", "ingest/photos/cat.jpg", "--root", str(mount)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["run_id"] == first["run_id"] and again["finished_at"] == first["finished_at"]
    assert main(["verify", "--root", str(mount)]) == 0


def _handler() -> Any:
    """A fresh handler per test (each reads its mount from the environment once, as at a cold start)."""
    from shared.runtime import make_handler
    from workers.registry import get_worker

    return make_handler(get_worker("image-resize"))


def _with_key(event: dict[str, Any], key: str) -> dict[str, Any]:
    moved = copy.deepcopy(event)
    for record in moved.get("Records", []):
        record["s3"]["object"]["key"] = key
    if "detail" in moved:
        moved["detail"]["object"]["key"] = key
    return moved


@pytest.mark.parametrize(("event_name", "key", "file_name"), [
    ("s3-event-url-encoded-key.json", "ingest/Happy%20Face.jpg", "Happy Face.jpg"),
    ("s3EventBridgeNotificationObjectCreatedEvent.json", "ingest/IMG_m7fzo3.jpg", "IMG_m7fzo3.jpg"),
], ids=["s3-notification", "eventbridge"])
def test_handler_processes_real_events(mount: Path, monkeypatch: pytest.MonkeyPatch, event_name: str, key: str,
                                       file_name: str) -> None:
    monkeypatch.setenv("MOUNTWORKS_MOUNT", str(mount))
    (mount / "ingest" / file_name).write_bytes(jpeg(noise((400, 300))))
    event = _with_key(load_event(event_name), key)
    response = _handler()(event, LocalContext("image-resize", 60))
    (result,) = response["results"]
    assert result["status"] == "done"
    run_dir = mount / "workspace" / "image-resize" / file_name / result["run_id"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {Path(o["path"]).name for o in manifest["outputs"]} == {"w320.jpg", "w320.webp", "w1024.jpg",
                                                                   "w1024.webp"}
    assert manifest["invocation"].startswith("local-")


def test_handler_skips_a_key_outside_ingest(mount: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOUNTWORKS_MOUNT", str(mount))
    response = _handler()(load_event("s3-event-url-encoded-key.json"), LocalContext("image-resize", 60))
    assert [r["status"] for r in response["results"]] == ["skipped"]
    assert not (mount / "workspace").exists()


def test_handler_sqs_reports_a_permanent_error_without_retry(mount: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOUNTWORKS_MOUNT", str(mount))
    (mount / "ingest" / "test.pdf").write_bytes(jpeg(noise((50, 50)))[:300])  # truncated JPEG, PDF name
    event = load_event("s3SqsEvent.json")
    for record in event["Records"]:
        body = json.loads(record["body"])
        body["Records"][0]["s3"]["object"]["key"] = "ingest/test.pdf"
        record["body"] = json.dumps(body)
    response = _handler()(event, LocalContext("image-resize", 60))
    assert response["batchItemFailures"] == []
    assert {r["status"] for r in response["results"]} == {"failed"}
    assert {r["error"]["code"] for r in response["results"]} == {"corrupt-input"}


def test_handler_import_stays_light() -> None:
    import subprocess
    import sys

    code = ("import sys, workers.image_resize.handler as h; assert callable(h.handler); "
            "heavy = [m for m in ('PIL', 'pyarrow', 'pypdf', 'ffmpeg', 'pillow_heif') if m in sys.modules]; "
            # import-time costs that bench/bench_image.py's cold-start rows found and removed:
            # OpenSSL's init behind hashlib (~2.5 ms) and dataclass creation (~0.4 ms a class)
            "heavy += [m for m in ('_hashlib', 'dataclasses') if m in sys.modules]; "
            "print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == ""


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "24 4194304"),  # freed image memory is kept for the next image (no page faults anew)
    ({"PILLOW_BLOCKS_MAX": "2"}, "2 16777216"),  # the operator's setting wins
], ids=["default", "environment-wins"])
def test_image_memory_blocks_are_reused_between_images(env: dict[str, str], expected: str) -> None:
    import os
    import subprocess
    import sys

    code = ("import workers.image_resize.core; from PIL import Image; "
            "print(Image.core.get_blocks_max(), Image.core.get_block_size())")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PILLOW_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1], env={**clean, **env})
    assert result.stdout.strip() == expected
