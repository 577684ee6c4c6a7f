"""Every real-world image in ../shared/corpus/image through ``mountworks run``.

Each file ends either done (exit 0) or as a classified permanent error (exit 3 with an
``error.json``), never as a traceback; the facts SOURCES.md promises are checked.
Skipped cleanly where the corpus is absent.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, Put, corpus_files
from PIL import Image

pytestmark = pytest.mark.corpus

FILES = corpus_files("image")

# file -> the permanent error code it must end with
FAILS = {
    "decompression_bomb.gif": "limit-exceeded",
    "truncated_image.png": "corrupt-input",
    "truncated_jpeg.jpg": "corrupt-input",
}

# file -> facts about the source (upright width/height, format, ...) from SOURCES.md
SOURCE_FACTS: dict[str, dict[str, Any]] = {
    "Landscape_1.jpg": {"width": 1800, "height": 1200, "orientation": 1},
    "Landscape_3.jpg": {"width": 1800, "height": 1200, "orientation": 3},
    "Landscape_6.jpg": {"width": 1800, "height": 1200, "orientation": 6, "stored_width": 1200},
    "Landscape_8.jpg": {"width": 1800, "height": 1200, "orientation": 8},
    "orientation_rectangle.jpg": {"width": 1, "height": 2, "orientation": 8},
    "F-exif-chunk-early.png": {"format": "PNG", "orientation": 6},
    "this-is-a-jpeg.png": {"format": "JPEG"},
    "iphone_15_pro.heic": {"format": "HEIF", "converted_to_srgb": True},
    "Iceland-P3.jpg": {"converted_to_srgb": True},
    "pil_sample_cmyk.jpg": {"mode": "CMYK"},
    "basn0g16.png": {"mode": "I;16"},
    "iss634.gif": {"frames": 42, "animated": True},
    "windows95.webp": {"frames": 20, "animated": True},
    "multipage.tiff": {"frames": 3, "animated": False},
    "p_trns_single.png": {"has_alpha": True},
    "transparent.webp": {"has_alpha": True},
    "6720px_white.jpg": {"width": 6720, "height": 4480},
}


Run = Callable[..., tuple[int, dict[str, Any]]]


@pytest.fixture
def run(put: Put, cli: Cli) -> Run:
    """``run(source, *options)``: copy a corpus file into ingest/ and ``mountworks run image-resize`` it."""

    def _run(source: Path, *options: str) -> tuple[int, dict[str, Any]]:
        code, record = cli.run("image-resize", put(source.name, source), *options)
        assert "Traceback" not in cli.err
        return code, record

    return _run


@pytest.mark.parametrize("source", FILES, ids=[p.name for p in FILES])
def test_each_corpus_image_is_done_or_a_classified_error(mount: Path, corpus: Path, source: Path,
                                                         run: Run) -> None:
    code, record = run(source)
    if source.name in FAILS:
        assert code == 3
        assert record["error"]["code"] == FAILS[source.name]
        assert record["error"]["message"]
        return
    assert code == 0, record
    facts = record["facts"]["source"]
    for key, value in SOURCE_FACTS.get(source.name, {}).items():
        assert facts[key] == value, key
    assert facts["blurhash"] and facts["dominant_color"].startswith("#")
    assert record["outputs"], "a done run lists its renditions"
    for entry in record["outputs"]:
        with Image.open(mount / entry["path"]) as im:
            assert im.size == (entry["width"], entry["height"])
            assert im.format == {"jpeg": "JPEG", "webp": "WEBP"}[entry["format"]]
            assert "exif" not in im.info and "icc_profile" not in im.info  # stripped by default
            assert max(im.size) <= max(facts["width"], facts["height"])  # never upscaled


def test_landscape_6_renditions_are_landscape(mount: Path, corpus: Path, run: Run) -> None:
    code, record = run(corpus / "image" / "Landscape_6.jpg")
    assert code == 0
    sizes = {Path(o["path"]).name: (o["width"], o["height"]) for o in record["outputs"]}
    assert sizes["w2048.jpg"] == (1800, 1200)  # never upscaled, and turned upright
    assert sizes["w1024.jpg"] == (1024, 683)


def test_display_p3_colours_are_converted(mount: Path, corpus: Path, run: Run) -> None:
    """Dropping the P3 profile without converting would keep the raw (duller) values."""
    source = corpus / "image" / "Iceland-P3.jpg"
    code, record = run(source, "formats=png", "sizes=600")
    assert code == 0
    (entry,) = record["outputs"]
    with Image.open(mount / entry["path"]) as out, Image.open(source) as raw:
        out_px = out.convert("RGB").tobytes()
        raw_px = raw.convert("RGB").tobytes()
    assert out.size == raw.size
    differing = sum(1 for a, b in zip(out_px, raw_px, strict=True) if abs(a - b) > 6)
    assert differing > len(raw_px) // 20  # a real colour transform touched many pixels


def test_animated_webp_option_keeps_frames(mount: Path, corpus: Path, run: Run) -> None:
    code, record = run(corpus / "image" / "windows95.webp", "animated=true", "formats=webp", "sizes=320")
    assert code == 0
    (entry,) = record["outputs"]
    assert entry["frames"] == 20
    with Image.open(mount / entry["path"]) as im:
        assert getattr(im, "n_frames", 1) == 20
        assert im.size == (320, 200)
