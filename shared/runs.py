"""Run identity, claims, outputs and the commit: the workspace side of the contract.

Layout, for worker ``W`` and input ``ingest/<name>``::

    workspace/W/<name>/<run-id>/            one run (``<run-id>.<n>`` for retry attempt n)
        .claim.<g>.json                     claim generations; the highest is the holder
        <outputs>                           written at their final paths
        manifest.json | error.json          written last, exclusively: the commit
    workspace/W/<name>/_seen/<fp>.json      stat fingerprint -> run-id, written after a commit

Why this shape:
- The run-id hashes the input's *content* with the worker version and options, so an
  event, a retry and a backfill agree. Finding a committed run must not read content,
  so a commit also leaves a ``_seen`` pointer keyed by (size, mtime, options, version):
  one ``stat`` and one ``open`` answer "already committed?".
- Only exclusive creates decide who wins: a claim generation, a manifest, an error
  record. No renames, no hard links, no deletes of anything a reader may trust.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, NamedTuple

from shared.config import MountConfig
from shared.errors import ClaimHeld, LimitExceeded, RefusedPath
from shared.paths import MAX_KEY_BYTES, InputRef, confine_output

MANIFEST = "manifest.json"
ERROR_RECORD = "error.json"
SEEN_DIR = "_seen"
CLAIM_PREFIX = ".claim."
MANIFEST_SCHEMA = "mountworks.manifest/1"
ERROR_SCHEMA = "mountworks.error/1"
TORN_GRACE_SECONDS = 10.0  # an empty claim or commit file older than this was torn by a crash


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _builtin_sha256() -> Any:
    """CPython's own sha256 constructor, which imports without OpenSSL (3.12: ``_sha2``)."""
    for name in ("_sha2", "_sha256"):
        with contextlib.suppress(ImportError):
            return importlib.import_module(name).sha256
    import hashlib  # pragma: no cover - a Python built without its own sha256

    return hashlib.sha256  # pragma: no cover


_small_sha256 = _builtin_sha256()


def short_digest(material: str) -> str:
    """A 32-hex-digit sha256 of a short string (run-ids, ``_seen`` keys).

    Uses CPython's built-in sha256 so that importing a handler does not initialize OpenSSL
    (``import hashlib`` costs ~2.5 ms of every cold start); a skip that only reads ``_seen``
    never loads it, and file contents still hash through OpenSSL in :func:`hash_file`.
    """
    return str(_small_sha256(material.encode()).hexdigest()[:32])


def hash_file(path: Path) -> tuple[str, int]:
    """sha256 and size of a file, streamed (bounded memory whatever the size)."""
    import hashlib  # OpenSSL's sha256 (SHA extensions): only when content is read

    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256")
        return digest.hexdigest(), os.fstat(f.fileno()).st_size


def run_id_for(worker: str, version: str, options: Mapping[str, Any], content_sha256: str) -> str:
    """Deterministic run-id: same content, worker version and options -> same id."""
    return short_digest(canonical_json([worker, version, options, content_sha256]))


def stat_fingerprint(worker: str, version: str, options: Mapping[str, Any], st: os.stat_result) -> str:
    """What we can know about an input without reading it: the key of a ``_seen`` pointer."""
    return short_digest(canonical_json([worker, version, options, st.st_size, st.st_mtime_ns]))


def write_exclusive(path: Path, data: bytes, *, durable: bool = True) -> bool:
    """Create ``path`` with ``data`` only if it does not exist; False if it already did.

    One ``write`` call after the exclusive create, so a killed process leaves either
    nothing, an empty file (recognised as torn), or the whole record. ``durable`` adds an
    fsync: commit records need it; claims and ``_seen`` pointers do not (losing one to a
    power cut only costs a takeover or a re-hash).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _read_json(path: Path) -> dict[str, Any] | None:
    """Parsed JSON object, or None when the file is missing; {} when torn (empty/garbled)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _age_seconds(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


# ---------------------------------------------------------------------------- commits


class Commit(NamedTuple):
    """A committed run: its directory and its record (manifest or error)."""

    run_dir: Path
    record: dict[str, Any]
    failed: bool


def read_commit(run_dir: Path) -> Commit | None:
    """The commit in ``run_dir``, or None.

    A commit file that does not parse was torn by a crash between its exclusive create
    and its single write: no reader ever trusts it, and the next claim holder removes it
    (:func:`clear_torn_commits`).
    """
    for name, failed in ((MANIFEST, False), (ERROR_RECORD, True)):
        record = _read_json(run_dir / name)
        if record and record.get("run_id"):
            return Commit(run_dir, record, failed)
    return None


# ----------------------------------------------------------------------------- claims


def _host_identity() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "unknown-boot"
    return f"{os.uname().nodename}/{boot}"


def _process_start(pid: int) -> str | None:
    """Start time of a live process in clock ticks since boot (guards against pid reuse).

    None when the process is gone, including a zombie: a killed holder whose parent died
    too may linger unreaped (containers often run no init that reaps), yet it is dead.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


class Claim(NamedTuple):
    """Who holds a run: generation ``g`` is the file ``.claim.<g>.json``."""

    run_dir: Path
    generation: int
    holder: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.run_dir / f"{CLAIM_PREFIX}{self.generation}.json"


def _claim_generations(run_dir: Path) -> list[int]:
    generations = []
    with contextlib.suppress(FileNotFoundError), os.scandir(run_dir) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith(CLAIM_PREFIX) and name.endswith(".json"):
                middle = name[len(CLAIM_PREFIX) : -len(".json")]
                if middle.isdigit():
                    generations.append(int(middle))
    return sorted(generations)


def current_claim(run_dir: Path) -> Claim | None:
    generations = _claim_generations(run_dir)
    if not generations:
        return None
    generation = generations[-1]
    holder = _read_json(run_dir / f"{CLAIM_PREFIX}{generation}.json") or {}
    return Claim(run_dir, generation, holder)


def holder_is_gone(claim: Claim, *, now: float | None = None, check_local: bool = True) -> bool:
    """True when a claim may be taken over.

    At once when its holder is known to be dead (same host, process gone or replaced);
    otherwise only after its lease. A torn (empty) claim counts as dead after a grace.
    """
    now = time.time() if now is None else now
    holder = claim.holder
    if not holder:
        return _age_seconds(claim.path) > TORN_GRACE_SECONDS
    if holder.get("released"):
        return True
    if float(holder.get("expires_at", 0)) < now:
        return True
    if check_local and holder.get("host") == _host_identity():
        pid = int(holder.get("pid", -1))
        start = _process_start(pid) if pid > 0 else None
        return start is None or start != holder.get("pid_start")
    return False


def acquire_claim(run_dir: Path, *, lease_seconds: float, check_local: bool = True) -> Claim:
    """Take the run for this process, or raise ClaimHeld.

    Exactly one of any number of concurrent callers wins, because each generation file is
    created exclusively: the first claim is generation 0, a takeover of a dead holder's
    generation ``g`` creates ``g + 1``.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    pid = os.getpid()
    holder = {
        "host": _host_identity(),
        "pid": pid,
        "pid_start": _process_start(pid),
        "started_at": now,
        "expires_at": now + lease_seconds,
    }
    existing = current_claim(run_dir)
    if existing is not None and not holder_is_gone(existing, now=now, check_local=check_local):
        raise ClaimHeld(
            f"run {run_dir.name} is being processed by {existing.holder.get('host', '?')} "
            f"pid {existing.holder.get('pid', '?')}; try again later"
        )
    generation = 0 if existing is None else existing.generation + 1
    claim = Claim(run_dir, generation, holder)
    if not write_exclusive(claim.path, canonical_json(holder).encode(), durable=False):
        raise ClaimHeld(f"run {run_dir.name} was claimed by another process a moment ago")
    return claim


def release_claim(claim: Claim) -> None:
    """Give a run back without committing (a retryable stop): the next caller takes it at once.

    Releasing is one more exclusive create, a generation that says ``released``: nothing
    is deleted, and if another process took the run over meanwhile, this does nothing.
    """
    if still_holds(claim):
        released = {**claim.holder, "released": True, "released_at": time.time()}
        write_exclusive(claim.run_dir / f"{CLAIM_PREFIX}{claim.generation + 1}.json",
                        canonical_json(released).encode(), durable=False)


def clear_torn_commits(claim: Claim) -> None:
    """Remove commit files torn by a dead holder; only the current claim holder may."""
    if not still_holds(claim):
        return
    for name in (MANIFEST, ERROR_RECORD):
        path = claim.run_dir / name
        if _read_json(path) == {}:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def still_holds(claim: Claim) -> bool:
    """True while no other process has taken the run over (checked before committing)."""
    current = current_claim(claim.run_dir)
    return current is not None and current.generation == claim.generation


# ---------------------------------------------------------------------------- outputs


class Output(NamedTuple):
    """One output file as the worker describes it; the runtime adds size and hash."""

    name: str
    media_type: str
    facts: dict[str, Any]


class OutputDir:
    """The only place a worker may write: its run directory, under its own prefix.

    Every output name is confined to the run directory, which is itself checked to lie
    under ``workspace/<worker>/``; ``ingest/`` and other workers' prefixes are out of reach.
    """

    def __init__(self, run_dir: Path, owner_dir: Path, *, name_budget: int | None = None) -> None:
        """``name_budget``: bytes left for an output's name under S3's key limit (None: no limit)."""
        real_owner = Path(os.path.realpath(owner_dir))
        if not Path(os.path.realpath(run_dir)).is_relative_to(real_owner):
            raise RefusedPath(f"run directory {run_dir} is outside {owner_dir}")
        self.run_dir = run_dir
        self.name_budget = name_budget
        self.outputs: list[Output] = []

    def path(self, name: str, media_type: str, **facts: Any) -> Path:
        """Reserve an output for a tool that writes by path (ffmpeg, pyarrow)."""
        target = confine_output(self.run_dir, name)
        if self.name_budget is not None and len(name.encode()) > self.name_budget:
            raise LimitExceeded(
                f"output {name!r} would get an S3 key over {MAX_KEY_BYTES} bytes (the input key is long); "
                "shorten the input's key", limit="s3_key_bytes")
        if target.name in (MANIFEST, ERROR_RECORD) or target.name.startswith(CLAIM_PREFIX):
            raise RefusedPath(f"output name {name!r} is reserved for the commit")
        target.parent.mkdir(parents=True, exist_ok=True)
        self.outputs = [o for o in self.outputs if o.name != name]
        self.outputs.append(Output(name, media_type, dict(facts)))
        return target

    @contextlib.contextmanager
    def open(self, name: str, media_type: str, **facts: Any) -> Iterator[IO[bytes]]:
        """Open an output for writing at its final path (truncating a crashed attempt's)."""
        with self.path(name, media_type, **facts).open("wb") as f:
            yield f

    def write_bytes(self, name: str, data: bytes, media_type: str, **facts: Any) -> None:
        self.path(name, media_type, **facts).write_bytes(data)

    def update_facts(self, name: str, **facts: Any) -> None:
        self.facts(name).update(facts)

    def facts(self, name: str) -> dict[str, Any]:
        """What is recorded about output ``name`` so far (KeyError when it was never declared)."""
        for output in self.outputs:
            if output.name == name:
                return output.facts
        raise KeyError(name)


# ----------------------------------------------------------------------------- layout


def seen_pointer_path(cfg: MountConfig, worker: str, name: str, fingerprint: str) -> str:
    """Where the ``_seen`` pointer of an input (``name``: below ingest/) lives, as a string:
    a backfill over millions of committed inputs looks this up once per file."""
    return os.path.join(cfg.root, cfg.workspace_prefix, worker, name, SEEN_DIR, fingerprint + ".json")


class RunLayout(NamedTuple):
    """Where one worker keeps the runs of one input."""

    cfg: MountConfig
    worker: str
    ref: InputRef

    @property
    def owner_dir(self) -> Path:
        return self.cfg.worker_dir(self.worker)

    @property
    def input_dir(self) -> Path:
        return self.owner_dir.joinpath(*self.ref.name.parts)

    def rel(self, path: Path) -> str:
        """A path relative to the mount root, as manifests record it."""
        return path.relative_to(self.cfg.root).as_posix()

    def name_budget(self, run_dir: Path) -> int:
        """Bytes left for names inside ``run_dir`` before a key passes S3's 1,024-byte limit."""
        key = "/".join(p for p in (self.cfg.bucket_prefix, self.rel(run_dir)) if p)
        return MAX_KEY_BYTES - len(key.encode()) - 1

    def seen_path(self, fingerprint: str) -> Path:
        return Path(seen_pointer_path(self.cfg, self.worker, self.ref.name.as_posix(), fingerprint))

    def seen(self, fingerprint: str) -> tuple[str, bool | None] | None:
        """The ``_seen`` pointer: (run-id, whether that commit failed), or None.

        A pointer is written only after its commit, so one that says ``failed: false``
        answers "already committed?" by itself; ``None`` for ``failed`` is an older pointer.
        """
        record = _read_json(self.seen_path(fingerprint))
        run_id = (record or {}).get("run_id")
        if not isinstance(run_id, str):
            return None
        failed = (record or {}).get("failed")
        return run_id, failed if isinstance(failed, bool) else None

    def seen_run_id(self, fingerprint: str) -> str | None:
        found = self.seen(fingerprint)
        return found[0] if found else None

    def remember(self, fingerprint: str, run_id: str, *, failed: bool) -> None:
        path = self.seen_path(fingerprint)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_exclusive(path, canonical_json({"failed": failed, "run_id": run_id}).encode(), durable=False)

    def attempts(self, run_id: str) -> list[tuple[int, Path]]:
        """The attempt directories of a run, oldest first: ``<run-id>``, ``<run-id>.2``, ..."""
        found: list[tuple[int, Path]] = []
        with contextlib.suppress(FileNotFoundError), os.scandir(self.input_dir) as entries:
            for entry in entries:
                if entry.name == run_id:
                    found.append((1, Path(entry.path)))
                elif entry.name.startswith(run_id + ".") and entry.name[len(run_id) + 1 :].isdigit():
                    found.append((int(entry.name[len(run_id) + 1 :]), Path(entry.path)))
        return sorted(found)

    def latest_commit(self, run_id: str) -> Commit | None:
        attempts = self.attempts(run_id)
        return read_commit(attempts[-1][1]) if attempts else None

    def attempt_dir(self, run_id: str, attempt: int) -> Path:
        return self.input_dir / (run_id if attempt == 1 else f"{run_id}.{attempt}")


def commit_record(run_dir: Path, name: str, record: Mapping[str, Any]) -> bool:
    """Write the commit file (manifest or error record) exclusively; False if one exists."""
    data = (json.dumps(record, indent=2, sort_keys=False, ensure_ascii=False) + "\n").encode()
    return write_exclusive(run_dir / name, data)
