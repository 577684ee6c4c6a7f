"""Content sniff for streams without magic: bare audio (MP3 without ID3, ADTS AAC) and
MPEG transport streams (broadcast ``.ts``, camcorder and Blu-ray ``.mts``/``.m2ts``).

A frame sync is 11 or 12 set bits: two bytes such as a UTF-16 byte-order mark (``FF FE``)
pass for one. So a stream is claimed only when its first frame header is valid (no
reserved version, layer, bitrate, sample rate or emphasis) *and* the frames that follow
it, found at the length that header gives, are valid headers of the same stream, for
``FRAMES`` frames in all. Pure Python and cheap: imported by the worker's SPEC.
"""

from __future__ import annotations

FRAMES = 3  # headers checked in a row: a chance match of two bytes cannot also chain
# The longest MPEG audio frame is 1,729 bytes (Layer II, 384 kbit/s, 32 kHz, padded), the
# longest ADTS frame 8,191; three typical frames fit in this head.
SNIFF_BYTES = 8192

# kbit/s by [version is MPEG-1][layer 1..3][bitrate index]
_MPEG1 = {1: (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
          2: (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
          3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)}
_MPEG2 = {1: (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
          2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
          3: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by version bits


def mpeg_frame(head: bytes, at: int) -> tuple[tuple[int, int, int], int] | None:
    """(stream key: version, layer, sample rate index; frame length) of a valid MPEG audio
    frame header at ``at``, or None."""
    if at + 4 > len(head) or head[at] != 0xFF or head[at + 1] & 0xE0 != 0xE0:
        return None
    b1, b2, b3 = head[at + 1], head[at + 2], head[at + 3]
    version, layer_bits = (b1 >> 3) & 3, (b1 >> 1) & 3
    bitrate_index, rate_index, padding = b2 >> 4, (b2 >> 2) & 3, (b2 >> 1) & 1
    if version == 1 or layer_bits == 0 or bitrate_index in (0, 15) or rate_index == 3 or b3 & 3 == 2:
        return None  # reserved values (free-format bitrate is not claimed either)
    layer = 4 - layer_bits
    bitrate = (_MPEG1 if version == 3 else _MPEG2)[layer][bitrate_index] * 1000
    rate = _RATES[version][rate_index]
    if layer == 1:
        length = (12 * bitrate // rate + padding) * 4
    elif layer == 3 and version != 3:
        length = 72 * bitrate // rate + padding
    else:
        length = 144 * bitrate // rate + padding
    return (version, layer, rate_index), length


def adts_frame(head: bytes, at: int) -> tuple[tuple[int, int, int, int], int] | None:
    """(stream key: MPEG id, profile, sample rate index, channels; frame length) of a valid
    ADTS header at ``at``, or None."""
    if at + 7 > len(head) or head[at] != 0xFF or head[at + 1] & 0xF6 != 0xF0:
        return None  # 12 sync bits, layer 00
    b1, b2, b3, b4, b5 = head[at + 1], head[at + 2], head[at + 3], head[at + 4], head[at + 5]
    rate_index = (b2 >> 2) & 0x0F
    channels = ((b2 & 1) << 2) | (b3 >> 6)
    length = ((b3 & 3) << 11) | (b4 << 3) | (b5 >> 5)
    if rate_index > 12 or length < (7 if b1 & 1 else 9):
        return None
    return ((b1 >> 3) & 1, b2 >> 6, rate_index, channels), length


def is_audio_stream(head: bytes) -> bool:
    """True when ``head`` starts with FRAMES chained frames of one MPEG audio or ADTS stream
    (two, when the head ends before the next one)."""
    for parse in (mpeg_frame, adts_frame):
        first = parse(head, 0)
        if first is None:
            continue
        key, at, seen = first[0], first[1], 1
        while seen < FRAMES:
            if at + 7 > len(head):
                return seen >= 2  # the head (or the file) ends first: two chained frames will do
            frame = parse(head, at)
            if frame is None or frame[0] != key:
                return False
            at, seen = at + frame[1], seen + 1
        return True
    return False


# MPEG transport streams: 188-byte packets; BDAV (.m2ts, AVCHD's .mts) puts a 4-byte
# timestamp before each; DVB may add 16 Reed-Solomon bytes after each.
TS_PACKET_SIZES = (188, 192, 204)
TS_PACKETS = 8  # sync bytes in a row at one packet stride: fixed-width text does not line up so
_TS_SYNC = 0x47
_CONTROL = bytes(range(9))  # NUL..BS: a packet header has some (PIDs, stuffing), text has none


def is_transport_stream(head: bytes) -> bool:
    """True when TS_PACKETS packets of one size follow each other in ``head``, from a sync
    byte within the first packet (a capture cut by a recorder may start mid-packet)."""
    for size in TS_PACKET_SIZES:
        span = (TS_PACKETS - 1) * size
        for start in range(min(size, len(head) - span)):
            if head[start] == _TS_SYNC and all(head[start + k * size] == _TS_SYNC for k in range(1, TS_PACKETS)):
                return any(byte in _CONTROL for byte in head[start:start + span])
    return False
