"""The workspace side of the contract, in one place: a run from identity to commit.

Layout, for worker ``W`` and input ``ingest/<name>``::

    workspace/W/<name>/<run-id>/            one run (``<run-id>.<n>`` for retry attempt n)
        .claim.<g>.json                     claim generations; the highest is the holder
                                            (removed once the commit is written)
        <outputs>                           written at their final paths
        manifest.json | error.json          written last, exclusively: the commit
    workspace/W/<name>/_seen/<fp>.json      stat fingerprint -> run-id, written after a commit

:class:`Run` is the one path through it (identity, ``_seen`` look-up, latest commit,
claim and takeover, outputs, the exclusive commit); no other module knows these names.

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
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NamedTuple

from shared.config import MountConfig
from shared.errors import ClaimHeld, InputChanged, LimitExceeded, RefusedPath
from shared.paths import MAX_KEY_BYTES, InputRef, confine_output, open_regular

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


RUN_ID_HEX = 32  # hex digits of a run-id


def short_digest(material: str) -> str:
    """A 32-hex-digit sha256 of a short string (run-ids, ``_seen`` keys).

    Uses CPython's built-in sha256 so that importing a handler does not initialize OpenSSL
    (``import hashlib`` costs ~2.5 ms of every cold start); a skip that only reads ``_seen``
    never loads it, and file contents still hash through OpenSSL in :func:`hash_file`.
    """
    return str(_small_sha256(material.encode()).hexdigest()[:RUN_ID_HEX])


def hash_file(path: Path) -> tuple[str, int]:
    """sha256 and size of a file, streamed (bounded memory whatever the size)."""
    import hashlib  # OpenSSL's sha256 (SHA extensions): only when content is read

    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256")
        return digest.hexdigest(), os.fstat(f.fileno()).st_size


def _same_content_stat(before: os.stat_result, after: os.stat_result) -> bool:
    """Do two stats of an input describe the same content? (size and mtime: a rewrite moves one)"""
    return before.st_size == after.st_size and before.st_mtime_ns == after.st_mtime_ns


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
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)  # on a FUSE mount the upload happens here, and may fail here
    except BaseException:
        # the file is ours alone (we created it) and holds nothing a reader may trust: remove
        # it, or a full disk's torn claim or record would block the retry for its grace
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
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

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    @property
    def error(self) -> dict[str, Any]:
        """The error record's ``{code, message, ...}`` ({} for a manifest)."""
        error = self.record.get("error") if self.failed else None
        return error if isinstance(error, dict) else {}

    def listed(self) -> dict[str, dict[str, Any]]:
        """The outputs its manifest lists, by name inside the run directory. A listed path is
        ``<workspace>/<worker>/<input>/<run-id>/<name>`` on a mount and in a bucket alike, so
        the name is what follows the run-id, however the root or the bucket prefix is laid out."""
        marker = "/" + self.run_id + "/"
        found: dict[str, dict[str, Any]] = {}
        for output in self.record.get("outputs") or []:
            _, sep, name = str(output.get("path", "")).partition(marker)
            if sep and name:
                found[name] = output
        return found


def newest_first(commits: list[Commit]) -> list[Commit]:
    """Commits by the time they finished, newest first (the run-id breaks ties)."""
    return sorted(commits, key=lambda c: (str(c.record.get("finished_at", "")), c.run_dir.name), reverse=True)


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


class Lookup(NamedTuple):
    """What :meth:`Run.find` found: a commit, else a live claim (in progress), else nothing."""

    commit: Commit | None
    claim: Claim | None
    hashed: bool  # the ``_seen`` pointer did not match, so the input's content was read


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


def remove_claims(run_dir: Path) -> None:
    """Delete every claim generation of a committed run.

    Once the commit exists no one reads a claim (every caller looks for the commit first),
    and on S3 Files each claim is an exported S3 object: left behind, millions of runs
    would leave millions of objects. A duplicate that claims after this finds the commit
    and removes its own claim the same way.
    """
    for generation in _claim_generations(run_dir):
        with contextlib.suppress(FileNotFoundError):
            (run_dir / f"{CLAIM_PREFIX}{generation}.json").unlink()


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


# -------------------------------------------------------------------------------- Run

MIN_NAME_BUDGET = 32  # room a run directory must leave under the key limit (commit record, claims, short names)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Run:
    """One worker's run of one input with one set of normalized options: identity to commit.

    Every caller (a Lambda invocation, ``mountworks run``, a backfill child, the crash
    commit, the durable video steps, the PDF range merge) takes the same steps::

        run = Run(cfg, worker, version, ref, options)
        run.look_up(st)            "already committed?" from the input's stat alone (no content read)
        run.identify(path, st)     hash the content: the run-id
        run.claim(...)             take the run's current attempt, or find it committed meanwhile
        run.outputs                where the worker writes (its own prefix only)
        run.commit_manifest(facts) | run.commit_error(error) | run.release()

    Cheap to build (a backfill makes one per file and worker): nothing touches the disk
    before a method does.
    """

    __slots__ = (
        "_outputs",
        "base_id",
        "cfg",
        "claimed",
        "fingerprint",
        "hashed",
        "invocation",
        "options",
        "ref",
        "run_dir",
        "sha256",
        "size",
        "source_object",
        "started",
        "started_wall",
        "version",
        "worker",
    )

    def __init__(self, cfg: MountConfig, worker: str, version: str, ref: InputRef, options: Mapping[str, Any],
                 *, invocation: str = "local", source_object: Mapping[str, Any] | None = None) -> None:
        self.cfg = cfg
        # the S3 object the trigger named (version_id, etag, sequencer): recorded, never hashed into the run-id
        self.source_object = dict(source_object or {})
        self.worker = worker
        self.version = version
        self.ref = ref
        self.options = dict(options)  # normalized: recorded in the manifest and hashed into the run-id
        self.invocation = invocation
        self.started = time.monotonic()
        self.started_wall = time.time()  # formatted only when a record is written
        self.sha256: str | None = None
        self.size: int | None = None
        self.base_id: str | None = None  # the run-id of this content; an attempt's directory adds ``.n``
        self.fingerprint: str | None = None  # key of the ``_seen`` pointer written after the commit
        self.hashed: tuple[Path, os.stat_result] | None = None  # the input and the stat its hash was taken under
        self.run_dir: Path | None = None
        self.claimed: Claim | None = None
        self._outputs: OutputDir | None = None

    # ---------------------------------------------------------------- where
    @property
    def owner_dir(self) -> Path:
        """``workspace/<worker>/``: the only tree this worker writes."""
        return self.cfg.worker_dir(self.worker)

    @property
    def input_dir(self) -> Path:
        """``workspace/<worker>/<input relpath>/``: every run of this input by this worker."""
        return self.owner_dir.joinpath(*self.ref.name.parts)

    @property
    def run_id(self) -> str:
        """The claimed attempt's id (its directory name: ``<run-id>`` or ``<run-id>.<n>``)."""
        if self.run_dir is None:
            raise RuntimeError("the run has no attempt yet: claim() first")
        return self.run_dir.name

    def rel(self, path: Path) -> str:
        """A path relative to the mount root, as manifests record it."""
        return path.relative_to(self.cfg.root).as_posix()

    def _seen_path(self, fingerprint: str) -> str:
        # a string path: a backfill over millions of committed inputs looks this up once per file
        return os.path.join(self.cfg.root, self.cfg.workspace_prefix, self.worker, self.ref.name.as_posix(),
                            SEEN_DIR, fingerprint + ".json")

    def with_options(self, options: Mapping[str, Any]) -> Run:
        """The run of the same input content with other options (a merge reads its range runs)."""
        other = Run(self.cfg, self.worker, self.version, self.ref, options, invocation=self.invocation)
        if self.sha256 is not None:
            other._identified(self.sha256, self.size or 0)
        return other

    # ------------------------------------------------------- "already committed?"
    def stat_fingerprint(self, st: os.stat_result) -> str:
        return stat_fingerprint(self.worker, self.version, self.options, st)

    def _pointer(self, st: os.stat_result) -> tuple[str, bool | None] | None:
        """The ``_seen`` pointer for this stat: (run-id, whether its commit failed), or None."""
        try:
            with open(self._seen_path(self.stat_fingerprint(st)), "rb") as f:
                pointer = json.loads(f.read())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None
        if not isinstance(pointer, dict):
            return None
        run_id, failed = pointer.get("run_id"), pointer.get("failed")
        if not isinstance(run_id, str):
            return None
        return run_id, failed if isinstance(failed, bool) else None

    def known_by_stat(self, st: os.stat_result, *, retry_failed: bool = False) -> bool:
        """Is this input committed (and not to be retried)? One small read: no content, no listing.

        A ``_seen`` pointer is written only after its commit and says whether that commit
        failed, so it answers alone; only ``--retry-failed`` over a failed input (or an older
        pointer without the flag) looks at the run directory.
        """
        pointer = self._pointer(st)
        if pointer is None:
            return False
        run_id, failed = pointer
        if failed is False or (failed is True and not retry_failed):
            return True
        commit = self._latest_commit(run_id)
        return commit is not None and not (retry_failed and commit.failed)

    def look_up(self, st: os.stat_result, *, retry_failed: bool = False) -> Commit | None:
        """The committed record for the content this stat describes, found without reading it."""
        pointer = self._pointer(st)
        commit = self._latest_commit(pointer[0]) if pointer is not None else None
        return None if commit is None or (retry_failed and commit.failed) else commit

    def find(self, path: Path, st: os.stat_result) -> Lookup:
        """What a reader asks: the commit for the input's *current* content, read-only.

        The ``_seen`` pointer answers first (no content read, as a backfill's skip); only
        when it does not match (a new upload, a touched file, a run committed elsewhere)
        is the content hashed. Nothing is written, not even the pointer.
        """
        commit = self.look_up(st)
        if commit is not None:
            return Lookup(commit, None, hashed=False)
        self.identify(path, st)
        commit = self.committed()
        if commit is not None:
            return Lookup(commit, None, hashed=True)
        claim = current_claim(self.attempt_dir())
        live = claim if claim is not None and not holder_is_gone(claim) else None
        return Lookup(None, live, hashed=True)

    def committed_runs(self) -> list[Commit]:
        """Every committed run of this input by this worker (any content, options, version), newest first."""
        found = []
        with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(self.input_dir) as entries:
            for entry in entries:
                if is_run_dir_name(entry.name) and entry.is_dir():
                    commit = read_commit(Path(entry.path))
                    if commit is not None:
                        found.append(commit)
        return newest_first(found)

    # ------------------------------------------------------------------- identity
    def identify(self, path: Path, st: os.stat_result) -> str:
        """Hash the input (streamed); ``st``, taken before, keys the ``_seen`` pointer. The run-id.

        Only a regular file is opened (never a FIFO: :func:`shared.paths.open_regular`). The
        stat is kept: the content processed must still be the content hashed when either
        record is committed (:meth:`check_source`).
        """
        import hashlib  # OpenSSL's sha256: only when content is read

        with open_regular(path) as f:
            sha256 = hashlib.file_digest(f, "sha256").hexdigest()
            after = os.fstat(f.fileno())
        if not _same_content_stat(st, after):
            raise InputChanged(f"{self.ref} changed while it was being hashed (size {st.st_size:,} -> "
                               f"{after.st_size:,} bytes); nothing was committed, try again when it is complete")
        self.fingerprint = self.stat_fingerprint(st)
        self.hashed = (path, st)
        return self._identified(sha256, after.st_size)

    def check_source(self) -> None:
        """Raise InputChanged when the input no longer has the stat its run-id was hashed under.

        Called before committing either record: a writer that rewrote the input during the
        run means the outputs (or the error) describe content the run-id does not name.
        """
        if self.hashed is None:
            return
        path, st = self.hashed
        try:
            now = os.stat(path)
        except FileNotFoundError:
            raise InputChanged(f"{self.ref} was removed while it was being processed; nothing was committed") from None
        if not _same_content_stat(st, now):
            raise InputChanged(
                f"{self.ref} changed while it was being processed (size {st.st_size:,} -> {now.st_size:,} bytes, "
                "or a new modification time): what was read is not the content its run-id names, so "
                "nothing was committed; try again when the upload is complete")

    def _identified(self, sha256: str, size: int) -> str:
        self.sha256, self.size = sha256, size
        self.base_id = run_id_for(self.worker, self.version, self.options, sha256)
        return self.base_id

    def _base(self) -> str:
        if self.base_id is None:
            raise RuntimeError("the run is not identified yet: identify() first")
        return self.base_id

    def attempts(self, run_id: str | None = None) -> list[tuple[int, Path]]:
        """The attempt directories of a run, oldest first: ``<run-id>``, ``<run-id>.2``, ..."""
        run_id = run_id or self._base()
        found: list[tuple[int, Path]] = []
        with contextlib.suppress(FileNotFoundError), os.scandir(self.input_dir) as entries:
            for entry in entries:
                if entry.name == run_id:
                    found.append((1, Path(entry.path)))
                elif entry.name.startswith(run_id + ".") and entry.name[len(run_id) + 1 :].isdigit():
                    found.append((int(entry.name[len(run_id) + 1 :]), Path(entry.path)))
        return sorted(found)

    def _latest_commit(self, run_id: str) -> Commit | None:
        attempts = self.attempts(run_id)
        return read_commit(attempts[-1][1]) if attempts else None

    def committed(self) -> Commit | None:
        """The commit of this content's latest attempt, or None (never processed, or in progress)."""
        return self._latest_commit(self._base())

    def attempt_dir(self, *, retry_failed: bool = False) -> Path:
        """The directory :meth:`claim` takes: the latest attempt, or the next one when that one
        failed for good and ``retry_failed`` asks for another (nothing committed is touched)."""
        base = self._base()
        attempts = self.attempts(base)
        attempt = attempts[-1][0] if attempts else 1
        if attempts and retry_failed:
            commit = read_commit(attempts[-1][1])
            if commit is not None and commit.failed:
                attempt += 1
        return self.input_dir / (base if attempt == 1 else f"{base}.{attempt}")

    def name_budget(self, run_dir: Path) -> int:
        """Bytes left for names inside ``run_dir`` before a key passes S3's 1,024-byte limit."""
        key = "/".join(p for p in (self.cfg.bucket_prefix, self.rel(run_dir)) if p)
        return MAX_KEY_BYTES - len(key.encode()) - 1

    # ---------------------------------------------------------------------- claim
    def claim(self, *, lease_seconds: float, check_local: bool = True, retry_failed: bool = False) -> Commit | None:
        """Hold the run's current attempt for this process, or return its commit.

        Returns the commit when the attempt is committed already (or gets committed by a
        duplicate while we look); raises ClaimHeld while a live holder works on it, and
        RefusedPath when the input's key leaves no room for outputs under S3's key limit.
        """
        run_dir = self.attempt_dir(retry_failed=retry_failed)
        commit = read_commit(run_dir)
        if commit is not None:
            return commit
        budget = self.name_budget(run_dir)
        if budget < MIN_NAME_BUDGET:
            raise RefusedPath(
                f"{self.ref} is too long a key: its outputs would get S3 keys over {MAX_KEY_BYTES:,} bytes "
                f"(workspace/{self.worker}/.../{run_dir.name}/ adds "
                f"{len(run_dir.name) + len(self.worker) + len(self.cfg.workspace_prefix) + 3} bytes); "
                f"shorten the input key by at least {MIN_NAME_BUDGET - budget} bytes")
        try:
            claim = acquire_claim(run_dir, lease_seconds=lease_seconds, check_local=check_local)
        except ClaimHeld:
            commit = read_commit(run_dir)
            if commit is not None:
                return commit
            raise
        commit = read_commit(run_dir)
        if commit is not None:  # committed by a duplicate between our look and our claim
            remove_claims(run_dir)  # ours is the only one left, and no one will read it
            return commit
        clear_torn_commits(claim)
        self.run_dir, self.claimed = run_dir, claim
        self._outputs = OutputDir(run_dir, self.owner_dir, name_budget=budget)
        return None

    @property
    def outputs(self) -> OutputDir:
        """The claimed attempt's directory, as the worker may write it."""
        if self._outputs is None:
            raise RuntimeError("the run is not claimed: claim() first")
        return self._outputs

    def release(self) -> None:
        """Give the claim back without committing (retryable stop, bug): the next caller takes it at once."""
        if self.claimed is not None:
            release_claim(self.claimed)

    # --------------------------------------------------------------------- commit
    def identity(self) -> dict[str, Any]:
        """The fields a manifest and an error record share."""
        return {
            "worker": self.worker,
            "worker_version": self.version,
            "run_id": self.run_id,
            "input": {"path": self.ref.rel.as_posix(), "size": self.size, "sha256": self.sha256,
                      **self._object_identity()},
            "options": self.options,
            "invocation": self.invocation,
        }

    def _object_identity(self) -> dict[str, Any]:
        """The trigger's ``version_id``, ``etag``, ``sequencer``, when they describe the bytes read.

        An object overwritten between its event and the read is another version: when the
        trigger's size is not the size hashed, its identity would mislead a consumer, so none
        is recorded (the sha256 still says what was processed).
        """
        expected = self.source_object.get("size")
        if expected is not None and expected != self.size:
            return {}
        return {k: v for k, v in self.source_object.items() if k != "size"}

    def _timing(self) -> dict[str, Any]:
        return {"started_at": _iso(self.started_wall), "finished_at": _iso(time.time()),
                "duration_ms": round((time.monotonic() - self.started) * 1000, 1)}

    def commit_manifest(self, facts: Mapping[str, Any]) -> Commit:
        """Hash every declared output and commit the manifest: from now on readers trust them."""
        outputs = []
        run_dir = self.outputs.run_dir
        for output in self.outputs.outputs:
            target = run_dir.joinpath(*output.name.split("/"))
            digest, size = hash_file(target)
            outputs.append({"path": self.rel(target), "size": size, "sha256": digest,
                            "media_type": output.media_type, **output.facts})
        record = {"schema": MANIFEST_SCHEMA, **self.identity(), "outputs": outputs, "facts": dict(facts),
                  **self._timing()}
        return self._commit(MANIFEST, record, failed=False)

    def commit_error(self, error: Mapping[str, Any]) -> Commit:
        """Commit the permanent error record (``{code, message, limit?}``): never retried but on request."""
        record = {"schema": ERROR_SCHEMA, **self.identity(), "error": dict(error), **self._timing()}
        return self._commit(ERROR_RECORD, record, failed=True)

    def _commit(self, name: str, record: dict[str, Any], *, failed: bool) -> Commit:
        claim, run_dir = self.claimed, self.run_dir
        if claim is None or run_dir is None:
            raise RuntimeError("the run is not claimed: claim() first")
        if not still_holds(claim):
            raise ClaimHeld(f"run {run_dir.name} was taken over by another process before its commit")
        try:
            self.check_source()
        except InputChanged:
            self.release()
            raise
        data = (json.dumps(record, indent=2, sort_keys=False, ensure_ascii=False) + "\n").encode()
        if not write_exclusive(run_dir / name, data):
            raise ClaimHeld(f"run {run_dir.name} was committed by another process")
        remove_claims(run_dir)  # claim files do not outlive the commit
        if self.fingerprint is not None:
            self._remember(self.fingerprint, failed=failed)
        return Commit(run_dir, record, failed)

    def _remember(self, fingerprint: str, *, failed: bool) -> None:
        path = Path(self._seen_path(fingerprint))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_exclusive(path, canonical_json({"failed": failed, "run_id": self._base()}).encode(), durable=False)

    def remember_committed(self, commit: Commit) -> None:
        """Leave the ``_seen`` pointer for a commit found by hashing (the next look-up needs no hash)."""
        if self.fingerprint is not None:
            self._remember(self.fingerprint, failed=commit.failed)


# ---------------------------------------------------------------------- reading trees


COMMIT_RECORDS = ((MANIFEST, False), (ERROR_RECORD, True))  # (file name, failed): a manifest wins


def record_path(cfg: MountConfig, record: Mapping[str, Any], *, failed: bool) -> str:
    """Where a commit record lies, relative to the mount root (a commit event names it)."""
    name = str(record["input"]["path"]).removeprefix(cfg.ingest_prefix + "/")
    return "/".join((cfg.workspace_prefix, str(record["worker"]), name, str(record["run_id"]),
                     ERROR_RECORD if failed else MANIFEST))


def parse_record(raw: bytes) -> dict[str, Any] | None:
    """A commit record's bytes as read by any transport (a file, an S3 GET); None when torn."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) and value.get("run_id") else None


class FoundManifest(NamedTuple):
    """A manifest met by :func:`manifests_under`: its record, or why it cannot be read."""

    path: Path
    record: dict[str, Any] | None
    problem: str | None


def run_attempt(name: str) -> tuple[str, int] | None:
    """``<run-id>`` -> (run-id, 1), ``<run-id>.<n>`` -> (run-id, n); None for anything else
    (not a run directory: ``_seen``, an output, a claim)."""
    base, dot, attempt = name.partition(".")
    if len(base) != RUN_ID_HEX or not all(c in "0123456789abcdef" for c in base):
        return None
    if not dot:
        return base, 1
    return (base, int(attempt)) if attempt.isdigit() else None


def is_run_dir_name(name: str) -> bool:
    """``<run-id>`` or ``<run-id>.<n>``: a run directory (not ``_seen``, not an output)."""
    return run_attempt(name) is not None


def manifests_under(top: Path) -> Iterator[FoundManifest]:
    """Every commit manifest below ``top`` (a run directory's ``manifest.json``), sorted.

    Only a file in a directory named like a run (``<run-id>`` or ``<run-id>.<n>``) is a
    manifest: an output or input that happens to be called ``manifest.json`` is not.
    """
    if top.is_dir() and is_run_dir_name(top.name) and (top / MANIFEST).is_file():
        candidates: Iterator[Path] = iter([top / MANIFEST])
    elif top.name == MANIFEST and top.is_file():
        candidates = iter([top])
    else:
        candidates = iter(sorted(top.rglob(MANIFEST)))
    for path in candidates:
        if not is_run_dir_name(path.parent.name) or not path.is_file():
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            yield FoundManifest(path, None, f"unreadable manifest ({exc})")
            continue
        if not isinstance(record, dict):
            yield FoundManifest(path, None, "unreadable manifest (not a JSON object)")
        else:
            yield FoundManifest(path, record, None)
