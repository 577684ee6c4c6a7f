"""video-transcode: H.264/AAC MP4 renditions, poster, probe facts, with ffmpeg.

Cheap to import: ffmpeg-python and the subprocess machinery load only in :mod:`.core`,
the first time an input is processed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.worker import WorkerSpec
from workers.video_transcode import options
from workers.video_transcode.sniff import SNIFF_BYTES, is_audio_stream, is_transport_stream

# ISO-BMFF brands that are still images (HEIC/AVIF): those belong to image-resize.
_IMAGE_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis")
_BMFF_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"styp", b"moof")


def is_media(head: bytes) -> bool:
    """Magic bytes of the audio/video containers ffmpeg reads for us."""
    if len(head) >= 12 and head[4:8] in _BMFF_BOXES:
        return not (head[4:8] == b"ftyp" and head[8:12] in _IMAGE_BRANDS)
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # Matroska / WebM
        return True
    if head.startswith(b"RIFF") and head[8:12] in (b"AVI ", b"WAVE"):
        return True
    if head.startswith((b"OggS", b"fLaC", b"ID3", b"FLV\x01", b"\x00\x00\x01\xba", b"\x30\x26\xb2\x75")):
        return True  # Ogg, FLAC, MP3 with ID3, FLV, MPEG-PS, ASF/WMV
    # MP3 without ID3 or ADTS AAC: chained frame headers, not two bytes (a UTF-16 byte-order
    # mark is a frame sync); MPEG-TS: sync bytes at a packet size's stride.
    return is_audio_stream(head) or is_transport_stream(head)


SPEC = WorkerSpec(
    name="video-transcode",
    version="1.2.0",  # 1.2: variable frame rate -> the nearest standard rate; poster time = its frame's
    extensions=frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".m2ts", ".mts", ".3gp",
                          ".flv", ".wmv", ".mpg", ".mpeg", ".mp3", ".m4a", ".aac", ".wav", ".flac",
                          ".ogg", ".opus"}),
    sniff=is_media,
    parse_options=options.parse,
    core_module="workers.video_transcode.core",
    sniff_bytes=SNIFF_BYTES,
)

if TYPE_CHECKING:  # the typed seam: mypy checks this worker's process() against WorkerCore
    from shared.worker import WorkerCore
    from workers.video_transcode import core
    from workers.video_transcode.options import Options

    _core: WorkerCore[Options] = core
