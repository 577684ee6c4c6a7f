"""video-transcode on an HDR (HLG) source: the worker's tone-mapping against ffmpeg's own, in one run.

    python -m bench.bench_hdr [--seconds 10] [--repeat 3] [--preset ultrafast]

Input: a generated 1080p30 SDR clip (testsrc2 with temporal noise), and an HLG copy of it as
a phone writes one (10-bit HEVC, BT.2020, ARIB STD-B67), made once per run. Every contender
makes one 720p H.264 rendition of the HLG clip (``ladder=720``, no poster), audio copied:

- ``plain ffmpeg, untouched`` (the anchor): ``-vf scale=1280:720`` and x264, the HLG tags
  carried over: what the worker made before (and makes with ``hdr=keep``);
- ``plain ffmpeg, zscale+tonemap``: ffmpeg's float recipe with the worker's curve
  (``zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=mobius:desat=0,
  zscale=t=bt709:m=bt709:r=tv``) after the scale;
- ``worker``: the whole worker run (hash, probe, the LUT made by tonemap.py, encode, output
  probe, manifest), ``hdr=sdr``;
- ``worker hdr=keep``: the worker without tone-mapping.

Timing is bench/harness.py's (interleaved, rotating order, medians). Quality: PSNR of each
720p output against the SDR clip the HLG copy was made from (scaled to 720p), and of the
worker's against ffmpeg's float recipe.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import Contender, compare, machine, mount_with  # noqa: E402
from shared.runtime import execute  # noqa: E402
from shared.worker import Deadline  # noqa: E402
from workers.video_transcode import SPEC, runner  # noqa: E402

HLG = "arib-std-b67"
FLOAT_RECIPE = ("zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=tonemap=mobius:desat=0,"
                "zscale=t=bt709:m=bt709:r=tv,format=yuv420p")


def ff(*args: str) -> None:
    subprocess.run([runner.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def psnr(path: Path, reference: Path) -> float:
    err = subprocess.run([runner.ffmpeg_exe(), "-hide_banner", "-i", str(path), "-i", str(reference), "-lavfi",
                          "[1:v]scale=1280:720[r];[0:v][r]psnr", "-f", "null", "-"], capture_output=True,
                         text=True, check=True).stderr
    return float(re.findall(r"average:([\d.]+|inf)", err)[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--preset", default="ultrafast")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-hdr-"))
    sdr, hlg = work / "sdr.mp4", work / "hlg.mp4"
    print("generating the clips ...", file=sys.stderr, flush=True)
    ff("-f", "lavfi", "-i", f"testsrc2=s=1920x1080:r=30:d={args.seconds},noise=alls=6:allf=t", "-f", "lavfi", "-i",
       f"sine=frequency=440:d={args.seconds}", "-c:v", "libx264", "-preset", "superfast", "-crf", "18",
       "-pix_fmt", "yuv420p", "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709",
       "-c:a", "aac", "-shortest", str(sdr))
    ff("-i", str(sdr), "-vf", f"zscale=t={HLG}:p=bt2020:m=bt2020nc:npl=100,format=yuv420p10le", "-c:v", "libx265",
       "-preset", "ultrafast", "-x265-params", "log-level=error:crf=14", "-tag:v", "hvc1", "-color_primaries",
       "bt2020", "-color_trc", HLG, "-colorspace", "bt2020nc", "-c:a", "copy", str(hlg))
    mount, cfg, ref = mount_with(work, hlg, "hlg.mp4")
    made: dict[str, Path] = {}

    def plain(name: str, filters: str) -> Contender:
        out = work / f"{name.replace(' ', '-').replace(',', '')}.mp4"
        argv = [runner.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(hlg), "-vf",
                filters, "-c:v", "libx264", "-preset", args.preset, "-crf", "23", "-pix_fmt", "yuv420p",
                "-force_key_frames", "expr:gte(t,n_forced*2)", "-c:a", "copy", "-movflags", "+faststart", str(out)]
        made[name] = out
        return Contender(name, lambda: subprocess.run(argv, check=True) and None)

    def worker(name: str, **options: str) -> Contender:
        def run() -> None:
            outcome = execute(SPEC, ref, {"ladder": "720", "preset": args.preset, "poster": False, **options}, cfg,
                              deadline=Deadline(None))
            assert outcome.status == "done" and outcome.record is not None, outcome.message
            rel = next(o["path"] for o in outcome.record["outputs"] if o["path"].endswith("720p.mp4"))
            made[name] = work / f"{name.replace(' ', '-').replace('=', '-')}.mp4"
            shutil.copyfile(mount / rel, made[name])

        return Contender(name, run, setup=lambda: shutil.rmtree(mount / "workspace", ignore_errors=True))

    contenders = [plain("plain ffmpeg, untouched", "scale=1280:720"),
                  plain("plain ffmpeg, zscale+tonemap", "scale=1280:720," + FLOAT_RECIPE),
                  worker("worker", hdr="sdr"), worker("worker hdr=keep", hdr="keep")]
    results = compare(contenders, anchor="plain ffmpeg, untouched", repeats=args.repeat)
    print(f"\n## video-transcode, HDR source ({machine()})\n")
    print(f"Input: {args.seconds} s 1080p30 HLG (10-bit HEVC, BT.2020) made from an SDR clip; one 720p rung, "
          f"preset {args.preset}, crf 23; {args.repeat} repeats, interleaved, medians.\n")
    print(results.markdown())
    print("\n| output | PSNR against the SDR original (dB) |\n|---|---:|")
    for name, path in made.items():
        print(f"| {name} | {psnr(path, sdr):.2f} |")
    print(f"\nThe worker's LUT against ffmpeg's float recipe: "
          f"{psnr(made['worker'], made['plain ffmpeg, zscale+tonemap']):.2f} dB PSNR.")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
