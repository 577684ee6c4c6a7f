"""Storage faults on the S3-backed mount (moto + s3fs): the server stops mid-run, s3fs's
cache disk fills, an upload fails with EIO. Each run ends retryable with nothing torn in
the bucket, and a re-run commits. The scenarios live in tests/s3faults.py, which the
release script also runs (``scripts/reliability.py --s3-faults``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import s3faults
from s3support import MotoS3, MountFactory, S3Mount

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def test_moto_stopped_mid_run_is_retryable_and_a_rerun_commits(moto_s3: MotoS3, mount_factory: MountFactory) -> None:
    mount: S3Mount = mount_factory(cache_options=s3faults.FAST_FAIL_OPTIONS)
    mount.put("ingest/", b"")
    result = s3faults.server_stopped(moto_s3, mount)
    assert result["failures"] == [], result


def test_a_full_s3fs_cache_disk_is_retryable_and_a_rerun_commits(mount_factory: MountFactory,
                                                                  tmp_path: Path) -> None:
    try:
        with s3faults.small_tmpfs(tmp_path / "cache", "8m") as cache:
            result = s3faults.cache_disk_full(mount_factory, cache)
    except PermissionError as exc:
        pytest.skip(str(exc))
    assert result["failures"] == [], result


def test_an_upload_failing_with_eio_is_retryable_and_a_rerun_commits(moto_s3: MotoS3,
                                                                     mount_factory: MountFactory) -> None:
    result = s3faults.write_eio(mount_factory, moto_s3)
    assert result["failures"] == [], result
