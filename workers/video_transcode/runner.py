"""Running ffmpeg: which binary, argv only, streamed stderr, progress, and a hard stop.

Why this module exists instead of ``ffmpeg.run()``: ffmpeg-python buffers all of
stderr in memory and cannot stop a process at a deadline. Here stderr is read line by
line into a bounded buffer (the first lines plus a ring of the last ones), ``-progress``
on stdout becomes periodic log lines, and a run past its time budget is killed with its
whole process group, so nothing keeps writing after we gave up. So is one whose resident
set outgrows its share of the function's memory (:func:`shared.memory.share_mb`): the
function would otherwise be killed at its MemorySize with nothing committed, on every retry.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from shared import config, memory
from shared import observability as obs

ENV_FFMPEG, ENV_FFPROBE = config.ENV_FFMPEG, config.ENV_FFPROBE
STDERR_HEAD_LINES = 40  # stream/format description ffmpeg prints first
STDERR_TAIL_LINES = 200  # the last lines, where failures are reported
PROGRESS_LOG_SECONDS = 10.0  # one progress log line per this many seconds of a run
POLL_SECONDS = 0.2  # also how often an ffmpeg's resident set is checked against its share
RESERVE_MB = 128  # of the function's memory, kept for this process: probing, hashing, the commit
FLOOR_MB = 256  # an ffmpeg may always hold this much (a 720p three-rung encode needs about that)
# A decoder's words for a damaged bitstream, and (with them) every decoding error ffmpeg reports
BITSTREAM_DAMAGE_MARKERS = ("invalid nal", "concealing", "error splitting the input", "decode_slice_header error",
                            "corrupt", "missing picture")
DECODE_ERROR_MARKERS = ("error while decoding", "no frame!", *BITSTREAM_DAMAGE_MARKERS)


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """``$MOUNTWORKS_FFMPEG``, else ``ffmpeg`` on PATH, else the imageio-ffmpeg wheel's binary."""
    explicit = config.ffmpeg_override()
    if explicit:
        return explicit
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    exe: str = imageio_ffmpeg.get_ffmpeg_exe()
    return exe


@lru_cache(maxsize=1)
def ffprobe_exe() -> str | None:
    """``$MOUNTWORKS_FFPROBE``, else ``ffprobe`` beside ffmpeg or on PATH; None: probe with ffmpeg."""
    explicit = config.ffprobe_override()
    if explicit is not None:
        return explicit or None
    beside = Path(ffmpeg_exe()).with_name("ffprobe")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("ffprobe")


def has_filter(name: str) -> bool:
    """Whether this ffmpeg has filter ``name`` (``zscale`` needs libzimg: the static build and
    Debian's have it, a minimal build may not). Listed once per binary, when first asked."""
    return name in _filters(ffmpeg_exe())


@lru_cache(maxsize=4)
def _filters(exe: str) -> frozenset[str]:
    try:
        listed = subprocess.run([exe, "-hide_banner", "-filters"], capture_output=True, text=True, timeout=30,
                                check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(words[1] for line in listed.splitlines() if len(words := line.split()) > 2)


def media_url(path: Path) -> str:
    """An input or output path as ffmpeg must see it: absolute, with the ``file:`` protocol.

    A name like ``-y.mp4`` or ``a:b.mp4`` is then never read as an option or a protocol.
    """
    return "file:" + str(path)


class Stopped(Exception):
    """The run was stopped from outside (deadline); the process group has been killed."""


@dataclass
class Result:
    """How an ffmpeg run ended; ``stderr`` keeps the first and the last lines only."""

    argv: list[str]
    returncode: int
    stdout: bytes
    head: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)
    dropped: int = 0
    progress: dict[str, str] = field(default_factory=dict)
    decode_errors: int = 0
    cached: bool = False  # nothing ran: the work was found done (a segment encoded elsewhere)
    memory_limit_mb: float | None = None  # set when it was stopped for outgrowing this share

    @property
    def frames(self) -> int:
        """Frames written, from the last ``-progress`` block (0 when unknown)."""
        try:
            return int(self.progress.get("frame", "0"))
        except ValueError:
            return 0

    @property
    def stderr_lines(self) -> list[str]:
        gap = [f"... {self.dropped} lines not kept ..."] if self.dropped else []
        return [*self.head, *gap, *self.tail]


class _StderrReader(threading.Thread):
    def __init__(self, stream: object) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.head: list[str] = []
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.seen = 0
        self.decode_errors = 0

    def run(self) -> None:
        for raw in iter(self.stream.readline, b""):  # type: ignore[attr-defined]
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self.seen += 1
            lowered = line.lower()
            if any(marker in lowered for marker in DECODE_ERROR_MARKERS):
                self.decode_errors += 1
            if len(self.head) < STDERR_HEAD_LINES:
                self.head.append(line)
            else:
                self.tail.append(line)


class _StdoutReader(threading.Thread):
    """Reads ``-progress pipe:1`` key=value blocks, or collects stdout when asked to."""

    def __init__(self, stream: object, label: str, collect: bool, limit: int) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.label = label
        self.collect = collect
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.progress: dict[str, str] = {}
        self.last_log = time.monotonic()

    def run(self) -> None:
        if self.collect:
            while chunk := self.stream.read(65536):  # type: ignore[attr-defined]
                if self.size < self.limit:
                    self.chunks.append(chunk[: self.limit - self.size])
                    self.size += len(chunk)
            return
        block: dict[str, str] = {}
        for raw in iter(self.stream.readline, b""):  # type: ignore[attr-defined]
            key, _, value = raw.decode("utf-8", "replace").strip().partition("=")
            block[key] = value
            if key == "progress":
                self.progress = block
                block = {}
                now = time.monotonic()
                if now - self.last_log >= PROGRESS_LOG_SECONDS or value == "end":
                    self.last_log = now
                    obs.logger.info("ffmpeg progress", extra={
                        "step": self.label, "out_time": self.progress.get("out_time"),
                        "frame": self.progress.get("frame"), "fps": self.progress.get("fps"),
                        "speed": self.progress.get("speed"), "state": value})


def run(
    argv: Sequence[str],
    *,
    label: str,
    cwd: Path | None = None,
    should_stop: Callable[[], bool] | None = None,
    collect_stdout: bool = False,
    stdout_limit: int = 64 << 20,
    sharing: int = 1,
) -> Result:
    """Run ffmpeg/ffprobe ``argv`` (a list: no shell, no quoting) to its end or until stopped.

    Unless ``collect_stdout``, ``-progress pipe:1`` is expected on stdout and logged. The
    process runs in its own session so that a stop kills it and anything it spawned.
    ``sharing``: how many ffmpeg processes this one runs at once (segments in parallel),
    which share the function's memory; one that outgrows its share is killed and its
    result says so (``memory_limit_mb``).
    """
    memory_limit_mb = memory.share_mb(sharing, reserve_mb=RESERVE_MB, floor_mb=FLOOR_MB)
    over_limit = False
    obs.logger.debug("ffmpeg start", extra={"step": label, "argv": list(argv)})
    proc = subprocess.Popen(list(argv), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    err = _StderrReader(proc.stderr)
    out = _StdoutReader(proc.stdout, label, collect_stdout, stdout_limit)
    err.start()
    out.start()
    try:
        while True:
            try:
                proc.wait(timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                if should_stop is not None and should_stop():
                    raise Stopped(label) from None
                if (memory.resident_mb_of(proc.pid) or 0.0) > memory_limit_mb:
                    over_limit = True
                    kill(proc)
                    break
    finally:
        if proc.poll() is None:
            kill(proc)
        err.join(timeout=5)
        out.join(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    return Result(list(argv), proc.returncode, b"".join(out.chunks), err.head, list(err.tail),
                  max(0, err.seen - len(err.head) - len(err.tail)), out.progress, err.decode_errors,
                  memory_limit_mb=memory_limit_mb if over_limit else None)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process group of ``proc`` and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
