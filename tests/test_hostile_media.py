"""video-transcode on media (and non-media) written by other tools that once got a wrong
permanent record: UTF-16 text sniffed as MP3, one-frame videos without a poster, a codec
ffmpeg cannot decode recorded as a damaged file, and damaged files recorded as our bug or as
an unsupported codec. Inputs are made with ffmpeg, or by editing the bytes of a file it made."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, Put

from workers.video_transcode import SPEC, is_media
from workers.video_transcode.sniff import SNIFF_BYTES

FFMPEG = shutil.which("ffmpeg")
pytestmark = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")


def ff(*args: str) -> None:
    assert FFMPEG is not None
    subprocess.run([FFMPEG, "-loglevel", "error", "-y", *args], check=True)


def frames(path: Path) -> int:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=nb_read_frames", "-of", "json", str(path)], check=True, capture_output=True).stdout
    return int(json.loads(out)["streams"][0]["nb_read_frames"])


# ------------------------------------------------------------------ 3: the audio sniff

AUDIO = {  # bare streams with no magic: MPEG audio layers I-III at the rate extremes, ADTS AAC
    "mp3-128k-44k-xing": ("mp3", ["-c:a", "libmp3lame", "-b:a", "128k", "-ar", "44100"]),
    "mp3-320k-32k": ("mp3", ["-c:a", "libmp3lame", "-b:a", "320k", "-ar", "32000", "-write_xing", "0"]),
    "mp3-8k-mpeg2.5": ("mp3", ["-c:a", "libmp3lame", "-b:a", "32k", "-ar", "8000", "-write_xing", "0"]),
    "mp3-vbr-22k": ("mp3", ["-c:a", "libmp3lame", "-q:a", "4", "-ar", "22050", "-write_xing", "0"]),
    "mp2-384k-32k": ("mp2", ["-c:a", "mp2", "-b:a", "384k", "-ar", "32000"]),
    "adts-aac-128k": ("aac", ["-c:a", "aac", "-b:a", "128k", "-f", "adts"]),
    "adts-aac-320k-48k": ("aac", ["-c:a", "aac", "-b:a", "320k", "-ar", "48000", "-f", "adts"]),
}


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("audio")
    made = {}
    for name, (ext, codec) in AUDIO.items():
        path = folder / f"{name}.{ext}"
        tagless = ["-id3v2_version", "0"] if ext == "mp3" else []
        ff("-f", "lavfi", "-i", "sine=frequency=440:duration=2", *codec, *tagless, str(path))
        assert path.read_bytes()[:1] == b"\xff", f"{name} starts with a tag, not a frame"
        made[name] = path
    return made


@pytest.mark.parametrize("name", list(AUDIO))
def test_bare_audio_streams_are_still_sniffed(name: str, audio_files: dict[str, Path]) -> None:
    assert SPEC.accepts(audio_files[name].read_bytes()[:SNIFF_BYTES])


def _table(n: int) -> str:
    return "id,name,note\n" + "".join(f"{i},row {i},caf\u00e9 \u2603\n" for i in range(n))


UTF16 = {
    "csv-utf16": _table(300).encode("utf-16"),  # the platform's BOM (FF FE on little-endian)
    "csv-utf16-le-bom": b"\xff\xfe" + _table(300).encode("utf-16-le"),
    "csv-utf16-be-bom": b"\xfe\xff" + _table(300).encode("utf-16-be"),
    "json-utf16-le-bom": b"\xff\xfe" + json.dumps([{"a": i, "b": "x" * 20} for i in range(100)]).encode("utf-16-le"),
    "jsonl-utf16-short": b"\xff\xfe" + '{"a": 1}\n'.encode("utf-16-le"),
    "tiny-utf16": b"\xff\xfe" + "a,b\n".encode("utf-16-le"),
}


@pytest.mark.parametrize("name", list(UTF16))
def test_text_starting_with_a_utf16_byte_order_mark_is_not_audio(name: str) -> None:
    assert not is_media(UTF16[name][:SNIFF_BYTES])


@pytest.mark.parametrize("head", [
    b"\xff\xfb\x90\x00" + b"\x00" * 60,  # one valid MP3 frame header, then no second frame
    b"\xff\xf1\x50\x80\x2e\x7f\xfc" + b"\x00" * 100,  # one ADTS header whose next frame is not there
    bytes(range(256)) * 4,
], ids=["one-mp3-header", "one-adts-header", "counting-bytes"])
def test_a_lone_frame_header_is_not_a_stream(head: bytes) -> None:
    assert not is_media(head)


def test_a_backfill_routes_utf16_tables_to_parquet_normalize_only(put: Put, mount: Path, cli: Cli,
                                                                   audio_files: dict[str, Path]) -> None:
    for name, data in UTF16.items():
        put(f"{name}.{'csv' if 'csv' in name else 'json'}", data)
    put("song.bin", audio_files["mp3-vbr-22k"])  # bare MP3 under a name that hints nothing: routed by content
    code, summary = cli("backfill", "--root", str(mount), "--no-progress")
    assert summary["totals"]["failed"] == 0, summary
    assert summary["workers"]["video-transcode"]["done"] == 1, summary
    assert summary["workers"]["parquet-normalize"]["done"] + summary["workers"]["parquet-normalize"]["failed"] \
        == len(UTF16)
    assert code == 0


# ------------------------------------------------------- 3b: transport streams


def _transport_streams(folder: Path) -> dict[str, Path]:
    """A broadcast TS (188-byte packets), a camcorder's AVCHD .mts and a Blu-ray .m2ts (192:
    a timestamp first), and a recording cut mid-packet, as a recorder's split leaves it."""
    clip = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=1", "-f", "lavfi", "-i",
            "sine=duration=1"]
    made = {"broadcast.ts": folder / "broadcast.ts", "camcorder.mts": folder / "camcorder.mts",
            "bluray.m2ts": folder / "bluray.m2ts"}
    ff(*clip, "-c:v", "mpeg2video", "-c:a", "mp2", "-f", "mpegts", str(made["broadcast.ts"]))
    for name in ("camcorder.mts", "bluray.m2ts"):
        ff(*clip, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "ac3", "-f", "mpegts", "-mpegts_m2ts_mode", "1",
           str(made[name]))
    made["cut.ts"] = folder / "cut.ts"
    made["cut.ts"].write_bytes(made["broadcast.ts"].read_bytes()[100 + 188 * 3:])
    return made


def test_transport_streams_are_sniffed_and_a_backfill_transcodes_them(tmp_path: Path, put: Put, mount: Path,
                                                                     cli: Cli) -> None:
    """.ts/.mts/.m2ts files have no magic: they were never routed, so a backfill of a bucket of
    recordings listed every one of them as unrouted."""
    made = _transport_streams(tmp_path)
    for name, path in made.items():
        assert is_media(path.read_bytes()[:SNIFF_BYTES]), name
        put(name.replace(".", "-") + ".bin", path)  # routed by content alone: no name hints
    code, summary = cli("backfill", "--root", str(mount), "--no-progress")
    assert code == 0 and summary["unrouted"] == 0, summary
    assert summary["workers"]["video-transcode"]["done"] == len(made), summary


@pytest.mark.parametrize("text", [
    b"import { x } from './y';\n" + b"export const G = 1;\n" * 400,  # TypeScript's .ts
    (b"G" + b"fixed-width record ".ljust(186, b".") + b"\n") * 40,  # a 188-byte record starting with G
], ids=["typescript", "fixed-width-text"])
def test_text_is_not_a_transport_stream(text: bytes) -> None:
    assert not is_media(text[:SNIFF_BYTES])


# ------------------------------------------------------------- 4: one-frame videos


ONE_FRAME = {
    "h263-3gp": ("3gp", ["-f", "lavfi", "-i", "testsrc=size=176x144:rate=15", "-frames:v", "1", "-c:v", "h263"]),
    "h264-mp4": ("mp4", ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-frames:v", "1", "-c:v", "libx264",
                         "-pix_fmt", "yuv420p"]),
    "h264-rotated-mp4": ("mp4", ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-frames:v", "1",
                                 "-c:v", "libx264", "-pix_fmt", "yuv420p"]),  # rotated below, by a remux
    "three-frames-vp9-webm": ("webm", ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30", "-frames:v", "3",
                                       "-c:v", "libvpx-vp9"]),
}


@pytest.mark.parametrize("name", list(ONE_FRAME))
def test_a_video_too_short_to_seek_in_gets_its_first_frame_as_poster(name: str, tmp_path: Path, put: Put,
                                                                      cli: Cli, mount: Path) -> None:
    ext, args = ONE_FRAME[name]
    source = tmp_path / f"{name}.{ext}"
    ff(*args, str(source))
    if "rotated" in name:
        plain, source = source, tmp_path / f"rotated-{source.name}"
        ff("-i", str(plain), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(source))
    code, record = cli.run("video-transcode", put(source.name, source), isolate=False)
    assert code == 0, record.get("error")
    by_name: dict[str, dict[str, Any]] = {o["path"].rsplit("/", 1)[-1]: o for o in record["outputs"]}
    poster = by_name["poster.jpg"]
    if name.startswith("three"):  # a control: long enough for the seek at 10% of its duration
        assert 0 < poster["time"] < 0.1
    else:
        assert poster["time"] == 0.0
    from PIL import Image

    with Image.open(mount / poster["path"]) as image:
        assert image.size == (poster["width"], poster["height"])
        high = image.convert("L").getextrema()[1]
        assert isinstance(high, int) and high > 100  # testsrc's colours, not a blank picture
    rendition = next(o for n, o in by_name.items() if n.endswith("p.mp4"))
    assert frames(mount / rendition["path"]) >= 1
    if "rotated" in name:
        assert (poster["width"], poster["height"]) == (240, 320)  # the displayed, rotated picture


# ------------------------------------------------------------- 5: a codec ffmpeg lacks


def _as_usac(source: Path, target: Path) -> None:
    """Make an xHE-AAC (USAC, audio object type 42) file from an AAC-LC MP4 by rewriting its
    AudioSpecificConfig: object type escape 31 + 10, same sample-rate index, same length."""
    data = bytearray(source.read_bytes())
    esds = data.find(b"esds")
    tag = data.find(b"\x05", esds + 12)  # DecoderSpecificInfo
    at = tag + 1
    while data[at] & 0x80:
        at += 1
    assert data[at] >= 2
    at += 1
    config = int.from_bytes(data[at:at + 2], "big")
    assert config >> 11 == 2, "the source is AAC-LC"
    data[at:at + 2] = ((31 << 11) | (10 << 5) | (((config >> 7) & 0x0F) << 1)).to_bytes(2, "big")
    target.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["video-with-xhe-aac", "xhe-aac-audio-only"])
def test_an_xhe_aac_stream_is_an_unsupported_codec_with_ffmpegs_words(kind: str, tmp_path: Path, put: Put,
                                                                      cli: Cli) -> None:
    lc = tmp_path / "lc.mp4"
    sine = ["-f", "lavfi", "-i", "sine=duration=1"]
    if kind == "video-with-xhe-aac":
        ff("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=1", *sine, "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(lc))
    else:
        ff(*sine, "-c:a", "aac", str(lc))
    usac = tmp_path / f"{kind}.mp4"
    _as_usac(lc, usac)
    code, record = cli.run("video-transcode", put(usac.name, usac), isolate=False)
    assert code == 3
    assert record["error"]["code"] == "unsupported-codec"
    assert "object type 42" in record["error"]["message"]
    assert " @ 0x" not in record["error"]["message"]  # no pointer addresses: the same message on every retry


# ------------------------------------------------------------------ damage is the input's


def test_a_failure_after_decoding_began_is_the_inputs_not_a_bug() -> None:
    """ffmpeg 5.1's words on a damaged phone capture (the corpus' fire2.mp4 with 1,239 bytes
    repeated at 1,006,527: the test below): its AAC decodes to 31 channels mid-stream and the
    filter graph ends with "Invalid argument", one of the words of a command we got wrong.
    Once ffmpeg is decoding, the failure is the input's: corrupt-input, not an internal error;
    and "Gain control is not implemented" among decoding errors is damage read as a feature,
    not a codec to re-encode."""
    from shared.errors import CorruptInput
    from workers.video_transcode.core import check_result
    from workers.video_transcode.runner import Result

    lines = ["[h264 @ 0x1] Invalid NAL unit size (-1980199158 > 52528).",
             "[h264 @ 0x1] missing picture in access unit with size 52532",
             "Error while decoding stream #0:0: Invalid data found when processing input",
             "[aac @ 0x2] Gain control is not implemented. Update your FFmpeg version to the newest one from Git.",
             "[auto_aresample_0 @ 0x3] [SWR @ 0x4] Rematrix is needed between 31 channels and mono but there is "
             "not enough information to do it",
             "Error reinitializing filters!",
             "Failed to inject frame into filter network: Invalid argument",
             "Error while processing the decoded data for stream #0:1",
             "Conversion failed!"]
    result = Result(argv=["ffmpeg"], returncode=1, stdout=b"", head=lines, decode_errors=3)
    with pytest.raises(CorruptInput, match="looks damaged"):
        check_result(result, "transcode", expect_frames=True)
    refused = Result(argv=["ffmpeg"], returncode=1, stdout=b"",
                     head=["[libx264 @ 0x1] Error setting option nosuch to value 1.", "Invalid argument"])
    with pytest.raises(RuntimeError, match="a bug in mountworks"):  # a command we got wrong stays ours
        check_result(refused, "transcode", expect_frames=True)


def test_audio_in_a_layout_aac_cannot_carry_is_unsupported_not_damaged(tmp_path: Path, put: Put, cli: Cli) -> None:
    """A valid 31-channel WAV (no known layout): the AAC encoder refuses it. Not damage."""
    wav = tmp_path / "31-channels.wav"
    labels = "".join(f"[c{n}]" for n in range(31))
    ff("-f", "lavfi", "-i", "sine=duration=1", "-filter_complex",
       f"[0]asplit=31{labels};{labels}join=inputs=31:channel_layout=0x7FFFFFFF[out]", "-map", "[out]",
       "-c:a", "pcm_s16le", str(wav))
    code, record = cli.run("video-transcode", put(wav.name, wav), isolate=False)
    assert code == 3, record
    assert record["error"]["code"] == "unsupported-format", record["error"]
    assert "channel layout" in record["error"]["message"] and "downmix" in record["error"]["message"]


@pytest.mark.corpus
def test_a_damaged_phone_capture_is_corrupt_input(corpus: Path, tmp_path: Path, put: Put, cli: Cli) -> None:
    data = (corpus / "video" / "fire2.mp4").read_bytes()
    at, length = 1_006_527, 1_239
    damaged = tmp_path / "fire2-damaged.mp4"
    damaged.write_bytes(data[:at] + data[at:at + length] * 2 + data[at:])
    code, record = cli.run("video-transcode", put(damaged.name, damaged), isolate=False)
    assert code == 3, record
    assert record["error"]["code"] == "corrupt-input", record["error"]
