"""The consumer's side: find the committed result of an input, list its runs, read its outputs.

    reader = MountReader("/mnt/workspace")              # or S3Reader(bucket, prefix)
    result = reader.result(spec, "ingest/photos/cat.jpg")
    if result.status == "done":
        data = reader.read_output(result.commit, "w320.jpg")   # size and sha256 checked

Why one module: a downstream service must not guess run-ids, ``_seen`` keys or record
file names. The look-up is :meth:`shared.runs.Run.find` (the ``_seen`` pointer first,
the content hashed only when it does not match); this module adds what a reader needs on
top: the status, the listing, and outputs that are returned only when the manifest lists
them, with their size and sha256 checked as they are read.

Over the S3 API (:class:`S3Reader`) the same answers come from keys: S3 Files exports
file-system writes to the bucket asynchronously and in no promised order, so a manifest
may be visible before the outputs it lists, or outputs before their manifest. Read the
manifest first and trust only what it lists; a listed output that is not there yet is
retryable (:class:`~shared.errors.RetryLater`), one that is there with other bytes is an
:class:`~shared.errors.OutputMismatch`.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

from shared.config import MountConfig
from shared.errors import NotCommitted, OutputMismatch, RetryLater, UsageError
from shared.outcomes import Status
from shared.paths import InputRef, check_key, input_from_path, resolve_input
from shared.runs import (
    COMMIT_RECORDS,
    Commit,
    Run,
    canonical_json,
    is_run_dir_name,
    newest_first,
    parse_record,
    run_attempt,
    run_id_for,
)
from shared.worker import WorkerSpec, is_worker_name

READ_CHUNK = 1 << 20


class Result(NamedTuple):
    """The committed result for an input's current content.

    ``status``: ``done`` (a manifest), ``failed`` (an error record), ``in-progress`` (a live
    claim holds the run, nothing committed yet) or ``not-committed`` (never processed, or
    the input changed since). ``hashed`` says whether the input's content had to be read.
    """

    status: str
    commit: Commit | None
    hashed: bool

    @property
    def record(self) -> dict[str, Any] | None:
        return None if self.commit is None else self.commit.record


DONE, FAILED, IN_PROGRESS, NOT_COMMITTED = str(Status.DONE), str(Status.FAILED), "in-progress", "not-committed"


def _worker_name(worker: str) -> str:
    """A worker name is one lowercase path component (it names ``workspace/<worker>/``)."""
    if not is_worker_name(worker):
        raise UsageError(f"{worker!r} is not a worker name (lowercase words joined by '-')")
    return worker


def commit_status(commit: Commit | None) -> str:
    """``done``, ``failed`` or ``not-committed`` (no commit)."""
    return NOT_COMMITTED if commit is None else FAILED if commit.failed else DONE


def listed(commit: Commit, name: str) -> dict[str, Any]:
    """The manifest's entry for output ``name`` (relative to the run directory, or to the mount).

    Raises NotCommitted for anything the manifest does not list: a reader never gets a
    file that a crashed attempt left behind, nor an output of a failed run.
    """
    if commit.failed:
        raise NotCommitted(f"run {commit.run_id} failed ({commit.error.get('code')}): it lists no outputs")
    entry = commit.listed().get(name) or next(
        (o for o in commit.record.get("outputs") or [] if o.get("path") == name), None)
    if entry is not None:
        return dict(entry)
    raise NotCommitted(f"{name!r} is not listed in the manifest of run {commit.run_id}")


class VerifiedStream:
    """An output's bytes, hashed as they are read; the end of the stream checks size and sha256.

    A reader that stops early has checked nothing; one that reads to the end (``read()``
    with no size, or until ``b""``) gets OutputMismatch instead of the last bytes when the
    output is not the one the manifest recorded.
    """

    def __init__(self, raw: IO[bytes] | Any, entry: dict[str, Any], where: str) -> None:
        import hashlib

        self._raw = raw
        self._entry = entry
        self._where = where
        self._digest = hashlib.sha256()
        self._size = 0
        self._checked = False

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            chunks = []
            while chunk := self.read(READ_CHUNK):
                chunks.append(chunk)
            return b"".join(chunks)
        data: bytes = self._raw.read(size)
        self._size += len(data)
        if self._size > int(self._entry["size"]):
            self._mismatch()
        self._digest.update(data)
        if not data:
            self._check()
        return data

    def _mismatch(self) -> None:
        raise OutputMismatch(f"{self._where} does not hold the {self._entry['size']} bytes and sha256 "
                             "its manifest lists (changed after the commit, or not exported whole yet)")

    def _check(self) -> None:
        if not self._checked:
            if self._size != int(self._entry["size"]) or self._digest.hexdigest() != self._entry["sha256"]:
                self._mismatch()
            self._checked = True

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(READ_CHUNK):
            yield chunk

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> VerifiedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------ mount


class MountReader:
    """Results on the mount itself (S3 Files in Lambda, any folder locally)."""

    def __init__(self, root: str | Path | MountConfig, *, ingest_prefix: str | None = None,
                 workspace_prefix: str | None = None) -> None:
        self.cfg = root if isinstance(root, MountConfig) else MountConfig.load(
            root, ingest_prefix=ingest_prefix, workspace_prefix=workspace_prefix)

    def _ref(self, input_path: str) -> InputRef:
        ref = input_from_path(self.cfg, input_path)
        if ref is None:
            raise UsageError(f"{input_path!r} is not a path under {self.cfg.ingest_prefix}/ relative to the mount root")
        return ref

    def _run(self, spec: WorkerSpec, input_path: str, options: dict[str, Any] | None) -> Run:
        normalized = spec.parse_options(options or {}).to_manifest()
        return Run(self.cfg, spec.name, spec.version, self._ref(input_path), normalized)

    def result(self, spec: WorkerSpec, input_path: str, options: dict[str, Any] | None = None) -> Result:
        """The committed record for the input's current content with these options."""
        run = self._run(spec, input_path, options)
        path = resolve_input(self.cfg, run.ref)
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            raise NotCommitted(f"{input_path} does not exist on the mount") from exc
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{input_path} is not a regular file")
        found = run.find(path, st)
        status = IN_PROGRESS if found.commit is None and found.claim is not None else commit_status(found.commit)
        return Result(status, found.commit, found.hashed)

    def runs(self, worker: str, input_path: str) -> list[Commit]:
        """Every committed run of the input (any content, options or version), newest first."""
        return Run(self.cfg, _worker_name(worker), "", self._ref(input_path), {}).committed_runs()

    def open_output(self, commit: Commit, name: str) -> VerifiedStream:
        entry = listed(commit, name)
        path = self.cfg.root / str(entry["path"])
        if not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(commit.run_dir)):
            raise OutputMismatch(f"{entry['path']} lies outside run {commit.run_id}")
        try:
            raw = path.open("rb")
        except FileNotFoundError as exc:
            raise OutputMismatch(f"{entry['path']} is listed by its manifest but missing") from exc
        return VerifiedStream(raw, entry, str(entry["path"]))

    def read_output(self, commit: Commit, name: str) -> bytes:
        with self.open_output(commit, name) as stream:
            return stream.read()


# --------------------------------------------------------------------------------- S3


class S3Reader:
    """The same answers over the S3 API: ``bucket`` and the key ``prefix`` the mount root maps to.

    ``client`` is a boto3 S3 client (one is made when omitted). The input's current
    content is matched by the ``etag`` / ``version_id`` its manifest recorded from the
    trigger; only when none matches is the object read and hashed.
    """

    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None, ingest_prefix: str = "ingest",
                 workspace_prefix: str = "workspace") -> None:
        if client is None:  # boto3: a consumer's dependency, not the workers' (not imported by name)
            import importlib

            client = importlib.import_module("boto3").client("s3")
        self.s3 = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.ingest_prefix = ingest_prefix.strip("/")
        self.workspace_prefix = workspace_prefix.strip("/")

    def _key(self, rel: str) -> str:
        return "/".join(p for p in (self.prefix, rel) if p)

    def _input_dir(self, worker: str, input_path: str) -> str:
        ingest = self.ingest_prefix + "/"
        check_key(input_path, what="input path")  # RefusedPath: '..', NUL, absolute, too long
        if not input_path.startswith(ingest):
            raise UsageError(f"{input_path!r} is not a path under {ingest}")
        return self._key(f"{self.workspace_prefix}/{_worker_name(worker)}/{input_path[len(ingest):]}") + "/"

    def _get(self, key: str) -> bytes | None:
        try:
            body: bytes = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        return body

    def _commit(self, run_prefix: str) -> Commit | None:
        for name, failed in COMMIT_RECORDS:
            raw = self._get(run_prefix + name)
            record = parse_record(raw) if raw is not None else None
            if record is not None:
                return Commit(Path(run_prefix.rstrip("/")), record, failed)
        return None

    def runs(self, worker: str, input_path: str) -> list[Commit]:
        """Every committed run of the input whose record has been exported, newest first."""
        top = self._input_dir(worker, input_path)
        found = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=top, Delimiter="/"):
            for common in page.get("CommonPrefixes") or []:
                run_prefix = str(common["Prefix"])
                if is_run_dir_name(run_prefix[len(top):].rstrip("/")):
                    commit = self._commit(run_prefix)
                    if commit is not None:
                        found.append(commit)
        return newest_first(found)

    def result(self, spec: WorkerSpec, input_path: str, options: dict[str, Any] | None = None) -> Result:
        """The committed record for the object's current version with these options."""
        normalized = spec.parse_options(options or {}).to_manifest()
        as_recorded = json.loads(canonical_json(normalized))  # as a manifest holds them (lists, not tuples)
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=self._key(input_path))
        except self.s3.exceptions.ClientError as exc:
            raise NotCommitted(f"{input_path} is not in s3://{self.bucket}/{self.prefix}") from exc
        etag, version = str(head.get("ETag", "")).strip('"'), head.get("VersionId")
        runs = self.runs(spec.name, input_path)
        ours = [c for c in runs if c.record.get("worker_version") == spec.version
                and c.record.get("options") == as_recorded]
        for commit in ours:  # identity recorded from the trigger: no content read
            recorded = commit.record.get("input") or {}
            if version and version != "null" and recorded.get("version_id") == version:
                return Result(commit_status(commit), commit, hashed=False)
            if not recorded.get("version_id") and etag and recorded.get("etag") == etag:
                return Result(commit_status(commit), commit, hashed=False)
        import hashlib

        body = self.s3.get_object(Bucket=self.bucket, Key=self._key(input_path), IfMatch=head["ETag"])["Body"]
        digest = hashlib.sha256()
        for chunk in iter(lambda: body.read(READ_CHUNK), b""):
            digest.update(chunk)
        run_id = run_id_for(spec.name, spec.version, normalized, digest.hexdigest())
        attempts = [(parsed[1], c) for c in runs if (parsed := run_attempt(c.run_id)) and parsed[0] == run_id]
        latest = max(attempts, key=lambda a: a[0], default=(0, None))[1]  # its last attempt
        return Result(commit_status(latest), latest, hashed=True)

    def open_output(self, commit: Commit, name: str) -> VerifiedStream:
        entry = listed(commit, name)
        key = self._key(str(entry["path"]))
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        except self.s3.exceptions.NoSuchKey as exc:
            raise RetryLater(f"{entry['path']} is listed by its manifest but not exported to S3 yet; "
                             "try again later") from exc
        return VerifiedStream(body, entry, f"s3://{self.bucket}/{key}")

    def read_output(self, commit: Commit, name: str) -> bytes:
        with self.open_output(commit, name) as stream:
            return stream.read()
