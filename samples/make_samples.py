"""Generate small sample inputs under MOUNT/ingest/ (nothing binary is committed).

    python samples/make_samples.py /tmp/mountworks-demo

Makes one input per worker, named as the events in samples/events/ expect:
    ingest/photos/sample photo.jpg   a photo-like JPEG with an EXIF orientation tag (6)
    ingest/photos/sample alpha.png   an RGBA PNG (alpha is flattened for JPEG renditions)
    ingest/docs/sample.pdf           a two-page PDF with real text, metadata and an outline
    ingest/tables/sample.csv         a messy CSV (odd headers, spaces, empty values, a bad row)
    ingest/videos/sample.mp4         a 2-second 320x240 clip with audio (only where ffmpeg runs)
    ingest/notes/readme.txt          a file no worker accepts (counted as unrouted)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path


def photo(path: Path) -> None:
    from PIL import Image, ImageDraw, ImageFilter

    image = Image.linear_gradient("L").resize((1600, 1200)).convert("RGB")
    r, g, b = image.split()
    image = Image.merge("RGB", (r, g.transpose(Image.Transpose.FLIP_LEFT_RIGHT), b.rotate(90)))
    draw = ImageDraw.Draw(image)
    for i in range(12):
        draw.ellipse((60 + i * 110, 200 + (i % 3) * 220, 220 + i * 110, 360 + (i % 3) * 220),
                     fill=(40 + i * 17, 200 - i * 11, 90 + i * 9))
    draw.rectangle((0, 0, 1599, 90), fill=(250, 250, 250))
    draw.text((20, 30), "mountworks sample (stored sideways: EXIF orientation 6)", fill=(0, 0, 0))
    image = image.filter(ImageFilter.GaussianBlur(1)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: display needs a 90 degree clockwise turn
    exif[0x010F] = "mountworks-samples"  # Make: metadata that renditions strip
    image.save(path, "JPEG", quality=88, exif=exif.tobytes())


def alpha_png(path: Path) -> None:
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (640, 480), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((80, 40, 560, 440), fill=(220, 60, 40, 200))
    draw.rectangle((260, 180, 380, 300), fill=(30, 90, 200, 255))
    image.save(path, "PNG")


def pdf(path: Path) -> None:
    """A PDF written by hand: real text in standard fonts, an outline, metadata."""
    pages = [
        "BT /F1 24 Tf 72 700 Td (mountworks sample document) Tj ET "
        "BT /F2 12 Tf 72 660 Td (Page one: text extracted directly from the mount.) Tj ET",
        "BT /F1 18 Tf 72 700 Td (Second page) Tj ET BT /F2 12 Tf 72 670 Td (The end.) Tj ET",
    ]
    objects: list[bytes] = []
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R /Outlines 8 0 R /PageMode /UseOutlines >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold >> "
                   b"/F2 << /Type /Font /Subtype /Type1 /BaseFont /Times-Roman >> >> >>")
    for i, content in enumerate(pages):
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources 3 0 R "
                       f"/Contents {5 + 2 * i} 0 R >>".encode())
        stream = content.encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Outlines /First 9 0 R /Last 9 0 R /Count 1 >>")
    objects.append(b"<< /Title (Second page) /Parent 8 0 R /Dest [6 0 R /Fit] >>")
    objects.append(b"<< /Title (mountworks sample) /Author (mountworks) /CreationDate (D:20261127100000Z) >>")
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += (f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info {len(objects)} 0 R >>\n"
            f"startxref\n{xref}\n%%EOF\n").encode()
    path.write_bytes(bytes(out))


def csv(path: Path) -> None:
    path.write_text(
        " Email ,Account ID,Signup Date,Active\n"
        " Alice@Example.COM ,1001,2026-01-05,yes\n"
        "bob@example.com,1002,05/02/2026,no\n"
        "carol@example.com,,2026-03-09,\n"
        "broken,row,with,too,many,fields\n"
        "\"dan, the man\"@example.com,1004,N/A,true\n",
        encoding="utf-8",
    )


def video(path: Path) -> bool:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        try:
            import imageio_ffmpeg

            ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
        except (ImportError, RuntimeError):
            return False
    result = subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2",
         "-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-shortest", str(path)],
        capture_output=True,
    )
    return result.returncode == 0


def make(root: Path) -> list[Path]:
    ingest = root / "ingest"
    made = []
    for rel, build in (("photos/sample photo.jpg", photo), ("photos/sample alpha.png", alpha_png),
                       ("docs/sample.pdf", pdf), ("tables/sample.csv", csv)):
        target = ingest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            build(target)
        made.append(target)
    clip = ingest / "videos" / "sample.mp4"
    clip.parent.mkdir(parents=True, exist_ok=True)
    if clip.exists() or video(clip):
        made.append(clip)
    note = ingest / "notes" / "readme.txt"
    note.parent.mkdir(parents=True, exist_ok=True)
    note.write_text("Not a media file: backfill counts it as unrouted.\n")
    made.append(note)
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="the folder to use as the mount root")
    args = parser.parse_args()
    for path in make(args.root):
        print(path.relative_to(args.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
