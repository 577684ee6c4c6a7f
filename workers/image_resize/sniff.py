"""Which image format a file holds, from its first bytes (never from its name).

Kept free of Pillow so that routing a file (backfill, SPEC.accepts) costs no import.
The names returned are Pillow's format names, so the core can compare them with
``Image.format``.
"""

from __future__ import annotations

# ISO-BMFF brands (the ``ftyp`` box) of still and sequence HEIF/AVIF files.
AVIF_BRANDS = frozenset({b"avif", b"avis"})
HEVC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
GENERIC_BRANDS = frozenset({b"mif1", b"msf1", b"mif2"})
# BITMAPINFOHEADER sizes a real BMP declares right after the 14-byte file header.
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


def _ftyp_brands(head: bytes) -> list[bytes]:
    if len(head) < 12 or head[4:8] != b"ftyp":
        return []
    box_size = int.from_bytes(head[0:4], "big")
    end = min(len(head), box_size if box_size >= 16 else len(head))
    brands = [head[8:12]]
    brands.extend(head[i:i + 4] for i in range(16, end - 3, 4))
    return brands


def detect_format(head: bytes) -> str | None:
    """``"JPEG"``, ``"PNG"``, ``"GIF"``, ``"WEBP"``, ``"TIFF"``, ``"BMP"``, ``"AVIF"``,
    ``"HEIF"``, or None for anything else."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "BMP"
    brands = _ftyp_brands(head)
    if brands:
        major, compatible = brands[0], brands[1:]
        if major in AVIF_BRANDS:
            return "AVIF"
        if major in HEVC_BRANDS:
            return "HEIF"
        if major in GENERIC_BRANDS or any(b in GENERIC_BRANDS for b in compatible):
            # a generic HEIF container names its codec among the compatible brands
            return "AVIF" if any(b in AVIF_BRANDS for b in compatible) else "HEIF"
    return None


def is_image(head: bytes) -> bool:
    """The worker's ``sniff``: True for every format the image worker decodes."""
    return detect_format(head) is not None
