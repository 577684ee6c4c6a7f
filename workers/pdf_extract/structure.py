"""The document structure of a PDF as pypdf reads it: page boxes, links, images, the
size of page content, metadata, outline, form fields, attachments, embedded images.

Everything here is contained at the smallest unit that still makes sense: a malformed
box is a flag on its page, a broken attachment an entry with its error; none of it
stops the run. Text is not here (see :mod:`workers.pdf_extract.pages`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pypdf import PdfReader
from pypdf.errors import LimitReachedError
from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject, StreamObject

from shared.errors import MountworksError
from shared.runs import OutputDir
from workers.pdf_extract.budget import Budget, PageTimeout, page_timer
from workers.pdf_extract.opening import MAX_FORM_FIELDS, MAX_OUTLINE_ENTRIES
from workers.pdf_extract.options import DEADLINE_MARGIN_SECONDS, MAX_LINKS, Options, short

MAX_PAGE_POINTS = 14_400.0  # PDF 1.7 (Annex C): 200 inches; larger boxes are flagged absurd
MAX_META_CHARS = 4_096  # one metadata value, one URI, one field value
MAX_XOBJECT_DEPTH = 4  # how deep "does this page draw an image?" looks into form XObjects
INFLATE_CHUNK = 1 << 20  # the content-size check inflates this much at a time, keeping none of it
DEFLATE_MAX_RATIO = 1032  # deflate's largest expansion: a 258-byte match costs at least 2 bits (RFC 1951)

METADATA_KEYS = {
    "title": "/Title", "author": "/Author", "subject": "/Subject", "keywords": "/Keywords",
    "creator": "/Creator", "producer": "/Producer",
}
DATE_KEYS = {"creation_date": "/CreationDate", "modification_date": "/ModDate"}


def resolve(value: Any) -> Any:
    return value.get_object() if isinstance(value, IndirectObject) else value


def _text_value(value: Any) -> str | None:
    value = resolve(value)
    if value is None:
        return None
    text = str(value)
    return text[:MAX_META_CHARS]


def draws_images(resources: Any, depth: int, seen: set[int]) -> bool:
    """Does a resource dictionary hold an image XObject (looking into forms, bounded)?"""
    resources = resolve(resources)
    if not isinstance(resources, DictionaryObject) or depth > MAX_XOBJECT_DEPTH:
        return False
    xobjects = resolve(resources.get("/XObject"))
    if not isinstance(xobjects, DictionaryObject):
        return False
    for ref in xobjects.values():
        if isinstance(ref, IndirectObject):
            if ref.idnum in seen:
                continue
            seen.add(ref.idnum)
        obj = resolve(ref)
        if not isinstance(obj, DictionaryObject):
            continue
        subtype = obj.get("/Subtype")
        if subtype == "/Image":
            return True
        if subtype == "/Form" and draws_images(obj.get("/Resources"), depth + 1, seen):
            return True
    return False


def page_box(page: Any, flags: list[str]) -> dict[str, Any]:
    box: dict[str, Any] = {"width": None, "height": None, "rotation": 0}
    try:
        media = page.mediabox
        width, height = abs(float(media.width)), abs(float(media.height))
        if not (math.isfinite(width) and math.isfinite(height)) or width <= 0 or height <= 0 \
                or width > MAX_PAGE_POINTS or height > MAX_PAGE_POINTS:
            flags.append("absurd_mediabox")
        if math.isfinite(width) and math.isfinite(height):
            box["width"], box["height"] = round(width, 3), round(height, 3)
    except Exception:  # a malformed box is a fact about the page, not a reason to lose it
        flags.append("invalid_mediabox")
    try:
        rotation = int(page.rotation)
        if rotation % 90:
            flags.append("invalid_rotation")
        box["rotation"] = rotation % 360
    except Exception:
        flags.append("invalid_rotation")
    return box


def page_links(page: Any) -> list[str]:
    uris: list[str] = []
    annots = resolve(page.get("/Annots"))
    if not isinstance(annots, list):
        return uris
    for ref in annots[:MAX_LINKS]:
        annot = resolve(ref)
        if not isinstance(annot, DictionaryObject) or annot.get("/Subtype") != "/Link":
            continue
        action = resolve(annot.get("/A"))
        if isinstance(action, DictionaryObject) and action.get("/S") == "/URI":
            uri = _text_value(action.get("/URI"))
            if uri:
                uris.append(uri)
    return uris




def _inflated_size(stream: StreamObject, limit: int) -> int:
    """Decoded bytes of one stream (or a bound on them), counted up to just past ``limit``
    and never kept.

    Flate (nearly every content stream) cannot expand more than DEFLATE_MAX_RATIO times, so
    a stream too short to reach ``limit`` is not inflated at all: the text engine inflates
    it anyway, and inflating it here too cost a third of PDFium's own time on a paper with
    large content streams. A longer one is inflated in chunks, so a bomb costs ``limit``
    bytes of work and no memory; other filter chains go through pypdf's decoders, bounded
    by its configuration (:func:`workers.pdf_extract.opening.pypdf_limits`).
    """
    filters = resolve(stream.get("/Filter"))
    names = [str(resolve(f)) for f in filters] if isinstance(filters, ArrayObject) else \
        ([str(filters)] if filters is not None else [])
    raw: bytes = getattr(stream, "_data", b"") or b""  # pypdf keeps the encoded (decrypted) bytes here
    if not names:
        return len(raw)
    if names not in (["/FlateDecode"], ["/Fl"]):
        return len(stream.get_data())
    if len(raw) * DEFLATE_MAX_RATIO <= limit:
        return len(raw) * DEFLATE_MAX_RATIO
    inflater, total = zlib.decompressobj(), 0
    try:
        while raw and total <= limit:
            total += len(inflater.decompress(raw, INFLATE_CHUNK))
            raw = inflater.unconsumed_tail
            if inflater.eof:
                break
    except zlib.error:
        pass  # a damaged stream is the text engine's to recover (or not); only its size matters here
    return total


def content_problem(page: Any, limit: int) -> tuple[str, str] | None:
    """``("limit", why)`` when a content stream of the page (or of a form it draws) decodes
    to more than ``limit`` bytes, ``("error", why)`` when one cannot be decoded at all, else
    None. Checked before either text engine sees the page: pypdf's ``extract_text`` swallows
    its own limit errors, PDFium has no such limit and passes over what it cannot decode."""
    todo: list[tuple[Any, int, str]] = [(page.get("/Contents"), 0, "content stream")]
    resources = [(page.get("/Resources"), 0)]
    seen: set[int] = set()
    try:
        while resources:
            res, depth = resources.pop()
            res = resolve(res)
            xobjects = resolve(res.get("/XObject")) if isinstance(res, DictionaryObject) else None
            if not isinstance(xobjects, DictionaryObject) or depth >= MAX_XOBJECT_DEPTH:
                continue
            for name, ref in xobjects.items():
                if isinstance(ref, IndirectObject):
                    if ref.idnum in seen:
                        continue
                    seen.add(ref.idnum)
                obj = resolve(ref)
                if isinstance(obj, StreamObject) and obj.get("/Subtype") == "/Form":
                    todo.append((obj, depth + 1, f"form XObject {name}"))
                    resources.append((obj.get("/Resources"), depth + 1))
        for value, _depth, what in todo:
            value = resolve(value)
            streams = [resolve(v) for v in value] if isinstance(value, ArrayObject) else [value]
            for stream in streams:
                if not isinstance(stream, StreamObject):
                    continue
                try:
                    size = _inflated_size(stream, limit)
                except LimitReachedError as exc:
                    return "limit", f"a {what} reached pypdf's decoding limit ({short(exc)})"
                except (NotImplementedError, ValueError) as exc:
                    return "error", f"a {what} cannot be decoded ({type(exc).__name__}: {short(exc)})"
                if size > limit:
                    return "limit", f"a {what} decodes to more than MAX_DECOMPRESSED_BYTES={limit}"
    except MountworksError:
        raise
    except Exception:
        return None  # a malformed reference: the text engine reports it, if it matters
    return None


# ------------------------------------------------------------------ document level


def pdf_date(raw: str | None) -> str | None:
    """A PDF date string (``D:YYYYMMDDHHmmSSOHH'mm'``, every part after the year optional)
    as ISO 8601; None when it cannot be understood."""
    if not raw:
        return None
    match = re.match(r"^\s*(?:D:)?(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?\s*([Zz+\-])?\s*(\d{2})?'?(\d{2})?'?",
                     raw)
    if match is None:
        return None
    year, month, day, hour, minute, second, sign, tz_h, tz_m = match.groups()
    try:
        naive = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
                         int(second or 0))
        if sign in ("+", "-"):
            offset = timedelta(hours=int(tz_h or 0), minutes=int(tz_m or 0))
            tz = timezone(offset if sign == "+" else -offset)
            return naive.replace(tzinfo=tz).isoformat()
        if sign in ("Z", "z"):
            return naive.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
        return naive.isoformat()
    except ValueError:
        return None


def metadata(reader: PdfReader | None) -> dict[str, Any]:
    info: dict[str, Any] = {key: None for key in [*METADATA_KEYS, *DATE_KEYS]}
    if reader is None:
        return info
    with contextlib.suppress(Exception):
        raw = reader.metadata
        if raw is None:
            return info
        for key, pdf_key in METADATA_KEYS.items():
            with contextlib.suppress(Exception):
                info[key] = _text_value(raw.get(pdf_key))
        for key, pdf_key in DATE_KEYS.items():
            with contextlib.suppress(Exception):
                value = _text_value(raw.get(pdf_key))
                info[key] = pdf_date(value)
                if value and info[key] is None:
                    info[key + "_raw"] = value
    return info


def pdf_version(reader: PdfReader) -> str | None:
    version: str | None = None
    with contextlib.suppress(Exception):
        match = re.search(r"%PDF-(\d+\.\d+)", reader.pdf_header)
        version = match.group(1) if match else None
    with contextlib.suppress(Exception):
        catalog = resolve(reader.trailer["/Root"])
        override = catalog.get("/Version") if isinstance(catalog, DictionaryObject) else None
        if override is not None:
            text = str(override).lstrip("/")
            if re.fullmatch(r"\d+\.\d+", text) and (version is None or float(text) > float(version)):
                version = text
    return version


def outline(reader: PdfReader) -> tuple[list[dict[str, Any]], str | None]:
    """The outline as a tree of {title, page (1-based or None), children}."""
    count = 0

    def build(items: list[Any]) -> list[dict[str, Any]]:
        nonlocal count
        nodes: list[dict[str, Any]] = []
        for item in items:
            if isinstance(item, list):
                if nodes:
                    nodes[-1]["children"] = build(item)
                continue
            count += 1
            if count > MAX_OUTLINE_ENTRIES:
                break
            page: int | None = None
            with contextlib.suppress(Exception):
                number = reader.get_destination_page_number(item)
                page = number + 1 if number is not None and number >= 0 else None
            nodes.append({"title": short(getattr(item, "title", "") or "", MAX_META_CHARS), "page": page,
                          "children": []})
        return nodes

    try:
        return build(list(reader.outline)), None
    except Exception as exc:
        return [], f"{type(exc).__name__}: {short(exc)}"


def form_fields(reader: PdfReader) -> tuple[list[dict[str, Any]], str | None]:
    try:
        fields = reader.get_fields() or {}
    except Exception as exc:
        return [], f"{type(exc).__name__}: {short(exc)}"
    result = []
    for name, spec in list(fields.items())[:MAX_FORM_FIELDS]:
        value = spec.get("/V") if isinstance(spec, dict) else None
        if isinstance(value, list):
            shown: Any = [_text_value(v) for v in value[:100]]
        else:
            shown = _text_value(value)
        result.append({"name": short(name, MAX_META_CHARS), "type": _text_value(spec.get("/FT")),
                       "value": shown})
    return result, None


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _media_type(name: Any) -> str:
    import mimetypes  # only documents with files or images need it

    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def safe_name(name: str, fallback: str) -> str:
    """An untrusted embedded name as one harmless path component (no separators, no dot-files)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE.sub("_", base).strip("._")[:100]
    return cleaned or fallback


def attachments(reader: PdfReader, out: OutputDir, options: Options, budget: Budget) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = []
    try:
        files = iter(reader.attachment_list)
        index = 0
        while True:
            try:
                embedded = next(files)
            except StopIteration:
                break
            index += 1
            name = short(str(embedded.name or ""), MAX_META_CHARS)
            entry: dict[str, Any] = {"name": name}
            listed.append(entry)
            if index > options.max_attachments:
                entry["skipped"] = f"more than MAX_ATTACHMENTS={options.max_attachments}"
                continue
            budget.deadline.check(DEADLINE_MARGIN_SECONDS, doing="writing attachments")
            content = _bounded_payload(entry, functools.partial(_attachment_bytes, embedded, options),
                                       options.max_attachment_bytes, "MAX_ATTACHMENT_BYTES")
            if content is None:
                continue
            target = f"attachments/{index:03d}-{safe_name(name, 'attachment')}"
            media_type = _media_type(name)
            out.write_bytes(target, content, media_type, original_name=name)
            entry["path"] = target
    except LimitReachedError as exc:
        listed.append({"error": f"listing attachments: MAX_DECOMPRESSED_BYTES reached ({short(exc)})"})
    except MountworksError:
        raise
    except Exception as exc:
        listed.append({"error": f"listing attachments: {type(exc).__name__}: {short(exc)}"})
    return listed


def _bounded_payload(entry: dict[str, Any], read: Callable[[], bytes], max_bytes: int,
                     limit: str) -> bytes | None:
    """Read an embedded file or image for ``entry``: its bytes, or None with the reason
    (a decompression limit, a broken object, too large) recorded on the entry."""
    try:
        data = read()
    except _TooLarge as exc:
        entry["size"] = exc.size
        data = None
    except LimitReachedError as exc:
        entry["skipped"] = f"MAX_DECOMPRESSED_BYTES reached ({short(exc)})"
        return None
    except Exception as exc:
        entry["error"] = f"{type(exc).__name__}: {short(exc)}"
        return None
    if data is not None:
        entry["size"] = len(data)
    if data is None or len(data) > max_bytes:
        entry["skipped"] = f"larger than {limit}={max_bytes}"
        return None
    return data


class _TooLarge(Exception):
    """An attachment whose declared size is over the limit: refused before it is inflated."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _attachment_bytes(embedded: Any, options: Options) -> bytes:
    declared = embedded.size
    if declared is not None and declared > options.max_attachment_bytes:
        raise _TooLarge(declared)
    content: bytes = embedded.content
    return content


def _image_bytes(images: Any, n: int, entry: dict[str, Any]) -> bytes:
    image = images[n]
    entry["name"] = short(image.name, 200)
    data: bytes = image.data
    return data


def images(reader: PdfReader, indexes: range, out: OutputDir, options: Options,
            budget: Budget) -> list[dict[str, Any]]:
    """Embedded images as files (pypdf converts non-JPEG ones with Pillow, imported lazily)."""
    listed: list[dict[str, Any]] = []
    written = 0
    for index in indexes:
        budget.deadline.check(DEADLINE_MARGIN_SECONDS, doing=f"extracting images of page {index + 1}")
        try:
            images = reader.pages[index].images
            count = len(images)
        except Exception as exc:
            listed.append({"page": index + 1, "error": f"{type(exc).__name__}: {short(exc)}"})
            continue
        for n in range(count):
            entry: dict[str, Any] = {"page": index + 1}
            listed.append(entry)
            if written >= options.max_images:
                entry["skipped"] = f"more than MAX_IMAGES={options.max_images}"
                continue
            try:
                seconds, _ = budget.page_seconds()
                with page_timer(seconds):
                    data = _bounded_payload(entry, functools.partial(_image_bytes, images, n, entry),
                                            options.max_image_bytes, "MAX_IMAGE_BYTES")
            except PageTimeout:
                budget.deadline.check(DEADLINE_MARGIN_SECONDS, doing="extracting images")
                entry["skipped"] = f"took longer than MAX_PAGE_SECONDS={options.max_page_seconds:g}s"
                continue
            if data is None:
                continue
            suffix = Path(entry["name"]).suffix.lower() if "." in entry["name"] else ".png"
            suffix = suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ".bin"
            target = f"images/p{index + 1:05d}-{n + 1:02d}{suffix}"
            media_type = _media_type(target)
            out.write_bytes(target, data, media_type, page=index + 1)
            entry["path"] = target
            written += 1
    return listed

