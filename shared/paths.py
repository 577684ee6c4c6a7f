"""Untrusted keys and paths become confined, typed paths here, and only here.

Everything that names a file from outside (an S3 key in an event, an event field, a
command-line argument) passes through :func:`check_key` once, at the edge. After that
the code handles :class:`InputRef` values, never raw strings, and every open is
preceded by a containment check against the real (symlink-resolved) mount.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import NamedTuple
from urllib.parse import unquote_plus

from shared.config import MountConfig
from shared.errors import RefusedPath

MAX_KEY_BYTES = 1024  # S3's own limit on a key
MAX_COMPONENT_BYTES = 255  # NAME_MAX on the mount


def decode_s3_notification_key(raw: str) -> str:
    """Decode a key from an S3 event notification, exactly once.

    S3 form-encodes keys in notifications: ``+`` is a space and ``%2B`` a plus.
    Decoding twice would turn a literal ``%2B`` in a name into ``+`` and then a space.
    """
    return unquote_plus(raw)


def check_key(key: str, *, what: str = "key") -> PurePosixPath:
    """Validate an already-decoded key or relative path; return it as a relative path.

    Refused: empty, over 1,024 bytes, a NUL byte, absolute, ``.``/``..``/empty components,
    components over 255 bytes, text that is not valid UTF-8.
    """
    if not key:
        raise RefusedPath(f"empty {what}")
    if "\x00" in key:
        raise RefusedPath(f"{what} {key!r} contains a NUL byte")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RefusedPath(f"{what} {key!r} is not valid UTF-8") from exc
    if len(encoded) > MAX_KEY_BYTES:
        raise RefusedPath(f"{what} is {len(encoded)} bytes long; S3 keys are at most {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise RefusedPath(f"{what} {key!r} is absolute; give a path relative to the mount root")
    parts = key.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise RefusedPath(f"{what} {key!r} has a {part or 'empty'!r} component; refusing to walk it")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise RefusedPath(f"{what} {key!r} has a component over {MAX_COMPONENT_BYTES} bytes")
    return PurePosixPath(*parts)


class InputRef(NamedTuple):
    """An input confined to the ingest prefix.

    ``rel`` is relative to the mount root (``ingest/photos/cat.jpg``);
    ``name`` is relative to the ingest prefix (``photos/cat.jpg``), the ``<input relpath>``
    of the workspace layout.
    """

    rel: PurePosixPath
    name: PurePosixPath

    def __str__(self) -> str:
        return self.rel.as_posix()


def _under(prefix: str, path: PurePosixPath) -> PurePosixPath | None:
    prefix_parts = tuple(prefix.split("/"))
    if path.parts[: len(prefix_parts)] != prefix_parts or len(path.parts) == len(prefix_parts):
        return None
    return PurePosixPath(*path.parts[len(prefix_parts) :])


def input_from_path(cfg: MountConfig, rel_path: str) -> InputRef | None:
    """A mount-relative path (CLI argument, direct invocation) -> InputRef.

    Returns ``None`` when the path is valid but outside the ingest prefix (callers skip
    such inputs with a log line); raises :class:`RefusedPath` when it is unsafe.
    """
    path = check_key(rel_path, what="input path")
    below = _under(cfg.ingest_prefix, path)
    return None if below is None else InputRef(rel=path, name=below)


def input_from_bucket_key(cfg: MountConfig, key: str) -> InputRef | None:
    """A decoded S3 object key -> InputRef, taking the mount's bucket prefix into account."""
    path = check_key(key, what="S3 key")
    if cfg.bucket_prefix:
        inside = _under(cfg.bucket_prefix, path)
        if inside is None:
            return None
        path = inside
    return input_from_path(cfg, path.as_posix())


@functools.lru_cache(maxsize=64)
def _real_dir(path: str) -> Path:
    """The ingest folder's real path, resolved once per process (a backfill asks per file)."""
    return Path(os.path.realpath(path))


def resolve_input(cfg: MountConfig, ref: InputRef) -> Path:
    """The real file behind an input, refused if symlinks lead it out of ``ingest/``.

    The file may not exist yet (S3 events can arrive before the mount shows the file);
    containment is checked on whatever part of the path exists.
    """
    ingest_real = _real_dir(str(cfg.ingest_dir))
    given = os.path.join(cfg.root, ref.rel)
    try:
        real = Path(os.path.realpath(given, strict=True))
    except (FileNotFoundError, NotADirectoryError):  # not visible yet: resolve what exists
        real = Path(os.path.realpath(given))
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise RefusedPath(f"input {ref} is a symlink loop (or a chain of more than 40 links); "
                          "refusing to follow it") from exc
    if not real.is_relative_to(ingest_real) or real == ingest_real:
        raise RefusedPath(f"input {ref} resolves outside {cfg.ingest_prefix}/ (symlink escape refused)")
    return real


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symlink"))


def not_regular(mode: int) -> str | None:
    """What a file is when it is not a regular file ("a FIFO (named pipe)", ...), else None."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def _refuse_irregular(mode: int, path: Path | str, what: str) -> None:
    kind = not_regular(mode)
    if kind is not None:
        raise RefusedPath(f"{what} {path} is {kind}, not a regular file; only regular files are read")


@contextlib.contextmanager
def open_regular(path: Path | str, what: str = "input") -> Iterator[io.BufferedReader]:
    """Open a file for reading only if it is a regular file, or refuse; never blocks.

    A FIFO (or a symlink swapped in for one) would block ``open`` until a writer came and
    ``read`` for ever: ``O_NONBLOCK`` makes the open return at once, and the opened
    descriptor's own ``fstat`` decides (a check on the path could be raced). Blocking
    mode is restored before reading a regular file.
    """
    try:
        _refuse_irregular(os.stat(path).st_mode, path, what)  # a device is not even opened
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RefusedPath(f"{what} {path} is a symlink loop; refusing to follow it") from exc
        if exc.errno == errno.ENXIO:  # a socket (or a FIFO's other side) swapped in after the stat
            raise RefusedPath(f"{what} {path} is not a regular file; only regular files are read") from exc
        raise
    try:
        _refuse_irregular(os.fstat(fd).st_mode, path, what)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


def confine_output(base: Path, name: str) -> Path:
    """A path for an output named ``name`` inside ``base`` (a run directory), or refuse.

    Output names come from our own code, but are checked all the same: ownership is
    enforced here, not by convention.
    """
    rel = check_key(name, what="output name")
    target = base.joinpath(*rel.parts)
    real_base = Path(os.path.realpath(base))
    real_parent = Path(os.path.realpath(target.parent))
    if not real_parent.is_relative_to(real_base):
        raise RefusedPath(f"output {name!r} would leave its run directory")
    return target
