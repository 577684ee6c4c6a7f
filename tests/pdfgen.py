"""Hand-written PDFs with known text, for the pdf-extract tests and benchmark.

pypdf cannot lay out text, so pages are written as raw content streams using the 14
standard Type1 fonts (no font files needed): Helvetica, Times-Roman, Courier. The
builder computes a correct xref table; :func:`decorate` then uses pypdf's writer for
what it does well (outline, attachments, metadata, encryption).
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, field

FONTS = {"F1": "Helvetica", "F2": "Times-Roman", "F3": "Courier"}


def _num(value: float) -> bytes:
    """A PDF number (PDF has no exponent notation)."""
    return b"%d" % value if float(value).is_integer() else (b"%.4f" % value)


def _escape(text: str) -> bytes:
    raw = text.encode("cp1252")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


@dataclass
class Line:
    text: str
    x: float = 72
    y: float = 720
    font: str = "F1"
    size: float = 12


@dataclass
class Page:
    lines: list[Line] = field(default_factory=list)
    mediabox: tuple[float, float, float, float] = (0, 0, 612, 792)
    rotate: int = 0
    image: bool = False  # draw a small image XObject
    links: list[str] = field(default_factory=list)
    raw_content: bytes | None = None  # replaces the generated content stream
    content_filter: str | None = None  # e.g. "/FlateDecode" for raw_content already compressed
    contents_ref: str | None = None  # a raw /Contents value (to break the page on purpose)


def text_page(*texts: str, font: str = "F1", size: float = 12, x: float = 72, top: float = 720,
              leading: float = 16, **kw: object) -> Page:
    """A page with one line per text, top to bottom."""
    lines = [Line(t, x, top - i * leading, font, size) for i, t in enumerate(texts)]
    return Page(lines=lines, **kw)  # type: ignore[arg-type]


def two_columns(left: list[str], right: list[str]) -> Page:
    """Two columns at the same heights; the content stream holds the left column first."""
    lines = [Line(t, 72, 720 - i * 16) for i, t in enumerate(left)]
    lines += [Line(t, 320, 720 - i * 16) for i, t in enumerate(right)]
    return Page(lines=lines)


def content_stream(page: Page) -> bytes:
    parts = []
    if page.image:
        parts.append(b"q 100 0 0 100 72 500 cm /Im1 Do Q")
    for line in page.lines:
        parts.append(b"BT /%s %g Tf 1 0 0 1 %g %g Tm (%s) Tj ET" % (
            line.font.encode(), line.size, line.x, line.y, _escape(line.text)))
    return b"\n".join(parts) + b"\n"


def build_pdf(pages: list[Page], *, version: str = "1.4", cyclic: bool = False,
              image: tuple[int, int, bytes] | None = None, depth: int = 1) -> bytes:
    """A complete PDF with a correct xref table; ``cyclic`` makes the page tree contain itself;
    ``image`` replaces the shared gray image with (width, height, flate-compressed pixels);
    ``depth`` nests the page tree that many levels deep (one /Pages node inside the other)."""
    objects: dict[int, bytes] = {}
    font_ids = {}
    next_id = 3
    for name, base in FONTS.items():
        objects[next_id] = (b"<< /Type /Font /Subtype /Type1 /BaseFont /%s /Encoding /WinAnsiEncoding >>"
                            % base.encode())
        font_ids[name] = next_id
        next_id += 1
    image_id = next_id
    width, height, pixels = image or (16, 16, zlib.compress(bytes(range(0, 256, 16)) * 16))
    objects[image_id] = (b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
                         b"/BitsPerComponent 8 /Filter /FlateDecode /Length %d >>\nstream\n"
                         % (width, height, len(pixels)) + pixels + b"\nendstream")
    next_id += 1
    fonts = b" ".join(b"/%s %d 0 R" % (n.encode(), i) for n, i in font_ids.items())
    chain = list(range(next_id, next_id + depth - 1))  # the /Pages nodes under the root, outermost first
    next_id += len(chain)
    parent = chain[-1] if chain else 2
    kids = []
    for page in pages:
        page_id, content_id = next_id, next_id + 1
        next_id += 2
        data = page.raw_content if page.raw_content is not None else content_stream(page)
        extra = b" /Filter %s" % page.content_filter.encode() if page.content_filter else b""
        objects[content_id] = b"<< /Length %d%s >>\nstream\n" % (len(data), extra) + data + b"\nendstream"
        annots = b""
        if page.links:
            ids = []
            for uri in page.links:
                objects[next_id] = (b"<< /Type /Annot /Subtype /Link /Rect [72 100 200 120] /Border [0 0 0] "
                                    b"/A << /S /URI /URI (%s) >> >>" % _escape(uri))
                ids.append(next_id)
                next_id += 1
            annots = b" /Annots [" + b" ".join(b"%d 0 R" % i for i in ids) + b"]"
        xobjects = b" /XObject << /Im1 %d 0 R >>" % image_id if page.image else b""
        contents = page.contents_ref.encode() if page.contents_ref else b"%d 0 R" % content_id
        box = b" ".join(_num(v) for v in page.mediabox)
        objects[page_id] = (b"<< /Type /Page /Parent %d 0 R /MediaBox [%s] /Rotate %d /Resources << /Font << %s >>%s"
                            b" >> /Contents %s%s >>" % (parent, box, page.rotate, fonts, xobjects, contents, annots))
        kids.append(page_id)
    kid_refs = [b"%d 0 R" % k for k in kids] + ([b"2 0 R"] if cyclic else [])
    objects[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    for level, node in reversed(list(enumerate([2, *chain]))):
        inner = b" ".join(kid_refs) if node == parent else b"%d 0 R" % chain[level]
        up = b" /Parent %d 0 R" % ([2, *chain][level - 1]) if level else b""
        objects[node] = b"<< /Type /Pages /Kids [%s] /Count %d%s >>" % (inner, len(kids), up)
    out = io.BytesIO()
    out.write(b"%%PDF-%s\n%%\xe2\xe3\xcf\xd3\n" % version.encode())
    offsets = {}
    for oid in sorted(objects):
        offsets[oid] = out.tell()
        out.write(b"%d 0 obj\n" % oid + objects[oid] + b"\nendobj\n")
    xref = out.tell()
    size = max(objects) + 1
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % size)
    for oid in range(1, size):
        out.write(b"%010d 00000 n \n" % offsets[oid] if oid in offsets else b"0000000000 65535 f \n")
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref))
    return out.getvalue()


def decorate(pdf: bytes, *, metadata: dict[str, str] | None = None,
             outline: list[tuple[str, int, list[tuple[str, int]]]] | None = None,
             attachments: dict[str, bytes] | None = None, user_password: str | None = None,
             owner_password: str = "owner-secret", algorithm: str = "AES-256") -> bytes:
    """Add metadata, an outline (title, 0-based page, children), attachments, encryption."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    if metadata:
        writer.add_metadata(metadata)
    for title, page, children in outline or []:
        parent = writer.add_outline_item(title=title, page_number=page)
        for child_title, child_page in children:
            writer.add_outline_item(title=child_title, page_number=child_page, parent=parent)
    for name, data in (attachments or {}).items():
        writer.add_attachment(name, data)
    if user_password is not None:
        writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm=algorithm)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def text_heavy(pages: int, lines: int = 48) -> bytes:
    """A long, text-heavy document (benchmarks): ``lines`` lines of prose per page, three fonts."""
    words = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do",
             "eiusmod", "tempor", "incididunt"]
    built = []
    for p in range(pages):
        texts = []
        for n in range(lines):
            start = (p * 7 + n * 3) % len(words)
            texts.append(f"{p + 1}.{n + 1} " + " ".join((words * 3)[start:start + 12]))
        page = text_page(*texts, font=("F1", "F2", "F3")[p % 3], size=9, top=760, leading=14.5)
        built.append(page)
    return build_pdf(built)


def font_map_bomb(decoded_mb: int) -> bytes:
    """Three pages; the middle one's font (F2) has a ToUnicode map that is a flate bomb of
    ``decoded_mb`` MB (a few hundred KB in the file). PDFium inflates a font's map when it
    extracts that page's text, and nothing else in the file is unusual."""
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import DictionaryObject, NameObject, StreamObject

    packer = zlib.compressobj(9)
    chunk = b" " * (1 << 20)
    bomb = b"".join([packer.compress(chunk) for _ in range(decoded_mb)] + [packer.flush()])
    pdf = build_pdf([text_page("before the bomb"), text_page("the bomb page", font="F2"), text_page("after it")])
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    stream = StreamObject()
    stream._data = bomb
    stream[NameObject("/Filter")] = NameObject("/FlateDecode")
    ref = writer._add_object(stream)
    for page in writer.pages:  # every page lists the same F2 font object
        resources = page["/Resources"].get_object()
        assert isinstance(resources, DictionaryObject)
        fonts = resources["/Font"].get_object()
        assert isinstance(fonts, DictionaryObject)
        font = fonts["/F2"].get_object()
        assert isinstance(font, DictionaryObject)
        font[NameObject("/ToUnicode")] = ref
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()
