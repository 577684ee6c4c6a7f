"""image-resize benchmark: 24-megapixel photos to the default renditions, side by side.

    python -m bench.bench_image [--files 20] [--repeats 3] [--skip-cold]

Contenders, interleaved in one run (see bench/harness.py), all making the same outputs
(320, 1024 and 2048 px on the longest edge, as JPEG and WebP at quality 85):
  mountworks   the worker through the real runtime (shared.runtime.execute: stat, hash,
               claim, manifest, logging) on a temporary mount
  core only    workers.image_resize.core.process alone: the toolkit's overhead is the gap
  naive Pillow open, resize LANCZOS from full size for each rendition, save
  pyvips       single-threaded (VIPS_CONCURRENCY=1), shrink-on-load thumbnail to 2048,
               then each smaller rendition from the previous one
Then cold start: whole-process import of the handler module against a bare import of
exactly the third-party modules it loads, median of repeated subprocess runs.

Inputs are generated once into bench/.cache (gitignored): noise, gradients and shapes,
6000x4000, quality 90, so they decode and compress like photos.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["VIPS_CONCURRENCY"] = "1"  # before pyvips loads libvips: single-threaded, like one Lambda vCPU

from PIL import Image, ImageDraw, ImageFilter

from bench.harness import Contender, compare, machine

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "bench" / ".cache" / "image"
SIZE = (6000, 4000)
SIZES = (2048, 1024, 320)  # the worker's defaults, largest first
QUALITY = 85  # the worker's default


# ------------------------------------------------------------------------------ inputs


def make_photo(path: Path, seed: int) -> None:
    """A 24 Mpx JPEG that compresses like a photo: smooth gradients, shapes, grain."""
    import random

    rnd = random.Random(seed)
    small = Image.new("RGB", (60, 40))
    for x in range(60):
        for y in range(40):
            small.putpixel((x, y), (int(120 + 100 * x / 60 + rnd.randint(-20, 20)),
                                    int(80 + 120 * y / 40 + rnd.randint(-20, 20)),
                                    int(200 - 120 * (x + y) / 100 + rnd.randint(-20, 20))))
    im = small.resize(SIZE, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(im)
    for _ in range(60):
        x, y = rnd.randrange(SIZE[0]), rnd.randrange(SIZE[1])
        r = rnd.randrange(40, 700)
        colour = (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256))
        if rnd.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        else:
            draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=colour, outline=(0, 0, 0), width=6)
    im = im.filter(ImageFilter.GaussianBlur(3))
    grain = Image.effect_noise(SIZE, 18).convert("RGB")
    im = Image.blend(im, grain, 0.12)
    im.save(path, "JPEG", quality=90)


def inputs(count: int) -> list[Path]:
    CACHE.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = CACHE / f"photo{i:02d}.jpg"
        if not path.is_file():
            print(f"generating {path.name}", file=sys.stderr, flush=True)
            make_photo(path, seed=i)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------ contenders


def naive_pillow(files: list[Path], out: Path) -> None:
    for path in files:
        with Image.open(path) as im:
            im.load()
            for edge in SIZES:
                scale = edge / max(im.size)
                resized = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
                resized.save(out / f"{path.stem}-w{edge}.jpg", "JPEG", quality=QUALITY)
                resized.save(out / f"{path.stem}-w{edge}.webp", "WEBP", quality=QUALITY)


def pyvips_chain(files: list[Path], out: Path) -> None:
    import pyvips

    pyvips.cache_set_max(0)  # no operation cache: every repeat decodes again, like the others
    for path in files:
        # copy_memory: each rendition is computed once and saved twice (a sequential JPEG
        # read cannot be replayed for the second save)
        image = pyvips.Image.thumbnail(str(path), SIZES[0], size="down").copy_memory()
        for edge in SIZES:
            if edge != SIZES[0]:
                image = image.thumbnail_image(edge, size="down").copy_memory()
            image.jpegsave(str(out / f"{path.stem}-w{edge}.jpg"), Q=QUALITY, strip=True)
            image.webpsave(str(out / f"{path.stem}-w{edge}.webp"), Q=QUALITY, strip=True)


class Mountworks:
    """The worker through shared.runtime.execute on a temporary mount (fresh runs each repeat)."""

    def __init__(self, files: list[Path], root: Path) -> None:
        from shared.config import MountConfig
        from shared.paths import input_from_path
        from workers.registry import get_worker

        self.root = root
        (root / "ingest").mkdir(parents=True, exist_ok=True)
        for path in files:
            target = root / "ingest" / path.name
            if not target.exists():
                shutil.copyfile(path, target)
        self.cfg = MountConfig.load(root)
        self.spec = get_worker("image-resize")
        self.refs = [input_from_path(self.cfg, f"ingest/{p.name}") for p in files]
        self.spec.core()  # import Pillow before timing, as a warm Lambda would have

    def clear(self) -> None:
        shutil.rmtree(self.root / "workspace", ignore_errors=True)

    def run(self) -> None:
        from shared.runtime import execute

        for ref in self.refs:
            assert ref is not None
            outcome = execute(self.spec, ref, None, self.cfg)
            assert outcome.status == "done", outcome

    def core_only(self, out: Path) -> None:
        from shared.runs import OutputDir
        from shared.worker import Deadline, InputFile, RunContext

        options = self.spec.parse_options(None)
        core = self.spec.core()
        for ref in self.refs:
            assert ref is not None
            path = self.root / "ingest" / ref.name
            run_dir = out / ref.name.as_posix()
            run_dir.mkdir(parents=True, exist_ok=True)
            source = InputFile(ref=ref, path=path, size=path.stat().st_size, sha256="0" * 64)
            ctx = RunContext(deadline=Deadline(None), run_id="bench", request_id="bench")
            core.process(source, OutputDir(run_dir, out), options, ctx)


# ------------------------------------------------------------------------------ cold start


PYCACHE = REPO / "bench" / ".cache" / "pycache"


def _env(bytecode: bool) -> dict[str, str]:
    """With ``bytecode``, our modules load from .pyc like site-packages do (as in an image
    built with ``python -m compileall``); without, they are compiled at every start, which
    is what PYTHONDONTWRITEBYTECODE=1 on a read-only file system gives."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPYCACHEPREFIX", None)
    if bytecode:
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _import_seconds(code: str, env: dict[str, str]) -> float:
    """Wall time of a fresh ``python -c code`` (whole process: start-up plus imports)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started


def third_party_modules(code: str) -> list[str]:
    """Third-party modules (outside this repo and the stdlib) loaded by ``code``."""
    probe = (code + "; import sys, json, sysconfig; "
             "purelib = sysconfig.get_paths()['purelib']; platlib = sysconfig.get_paths()['platlib']; "
             "print(json.dumps(sorted(n for n, m in list(sys.modules.items()) "
             "if (getattr(m, '__file__', None) or '').startswith((purelib, platlib)))))")
    out = subprocess.run([sys.executable, "-c", probe], check=True, cwd=REPO, capture_output=True, text=True)
    names: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return names


def cold_start(repeats: int) -> list[tuple[str, float, float, float, list[str]]]:
    """(what, ours s, bare s, paired ratio, libraries) for the handler, with and without .pyc."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "shared", "workers"], check=True, cwd=REPO,
                   env=_env(True))
    rows = []
    for what, code in (("import handler", "import workers.image_resize.handler"),
                       ("import handler + core (first input)",
                        "import workers.image_resize.handler, workers.image_resize.core")):
        modules = third_party_modules(code)
        tops = sorted({m.split(".")[0] for m in modules if not m.startswith(("__editable__", "_distutils"))})
        bare = "import " + ", ".join(m for m in modules if not m.startswith(("__editable__", "_distutils")))
        for bytecode in (True, False):
            env = _env(bytecode)
            ours_times, bare_times = [], []
            for _ in range(repeats):  # interleaved, like the harness
                ours_times.append(_import_seconds(code, env))
                bare_times.append(_import_seconds(bare, env))
            paired = statistics.median(o / b for o, b in zip(ours_times, bare_times, strict=True))
            label = f"{what}, {'with .pyc' if bytecode else 'no .pyc (compiled at start)'}"
            rows.append((label, statistics.median(ours_times), statistics.median(bare_times), paired, tops))
    return rows


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cold-repeats", type=int, default=15)
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--skip-naive", action="store_true", help="leave out the slow naive Pillow script")
    args = parser.parse_args(argv)

    files = inputs(args.files)
    work = Path(tempfile.mkdtemp(prefix="mountworks-bench-"))
    try:
        mw = Mountworks(files, work / "mount")
        outs = {name: work / name for name in ("naive", "vips", "core")}

        def fresh(name: str) -> None:
            shutil.rmtree(outs[name], ignore_errors=True)
            outs[name].mkdir(parents=True)

        contenders = [
            Contender("mountworks", mw.run, setup=mw.clear, note="runtime.execute"),
            Contender("core only", lambda: mw.core_only(outs["core"]), setup=lambda: fresh("core"),
                      note="core.process"),
            Contender("pyvips", lambda: pyvips_chain(files, outs["vips"]), setup=lambda: fresh("vips"),
                      note="VIPS_CONCURRENCY=1"),
        ]
        if not args.skip_naive:
            contenders.append(Contender("naive Pillow", lambda: naive_pillow(files, outs["naive"]),
                                        setup=lambda: fresh("naive")))
        anchor = "pyvips" if args.skip_naive else "naive Pillow"
        results = compare(contenders, anchor=anchor, repeats=args.repeats, units=len(files), unit_name="images")

        print(f"\n{len(files)} x {SIZE[0]}x{SIZE[1]} JPEG (q90) -> {', '.join(map(str, SIZES))} px x JPEG+WebP "
              f"q{QUALITY}; {args.repeats} interleaved repeats; {machine()}\n")
        print(results.markdown())
        overhead = 1 - results.paired("core only", "mountworks")
        print()
        if not args.skip_naive:
            print(f"- throughput vs naive Pillow: {1 / results.paired('mountworks', 'naive Pillow'):.2f}x paired, "
                  f"{1 / results.ratio('mountworks', 'naive Pillow'):.2f}x of medians (target >= 2.5x)")
        print(f"- wall time vs pyvips: {results.paired('mountworks', 'pyvips'):.2f}x paired, "
              f"{results.ratio('mountworks', 'pyvips'):.2f}x of medians (target <= 1.3x)")
        print(f"- toolkit overhead (1 - core.process / execute, paired): {overhead * 100:.1f}% (target <= 5%)")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if not args.skip_cold:
        print("\n| cold start (whole process) | ours s | bare import s | ratio of medians | paired ratio "
              "| third-party libraries loaded |")
        print("|---|---:|---:|---:|---:|---|")
        for what, ours, bare, paired, tops in cold_start(args.cold_repeats):
            print(f"| {what} | {ours:.3f} | {bare:.3f} | {ours / bare:.2f}x | {paired:.2f}x | {', '.join(tops)} |")
        print("\n(target <= 1.2x; bare = `python -c 'import <exactly the third-party modules ours loads>'`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
