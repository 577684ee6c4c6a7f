"""Untrusted keys and paths: decoded once, confined, refused with a clear message."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from shared.config import MountConfig
from shared.errors import RefusedPath, UsageError
from shared.paths import (
    MAX_KEY_BYTES,
    check_key,
    confine_output,
    decode_s3_notification_key,
    input_from_bucket_key,
    input_from_path,
    resolve_input,
)

HOSTILE = [
    ("dotdot", "ingest/../etc/passwd", "'..' component"),
    ("dotdot-leading", "../ingest/a.jpg", "'..' component"),
    ("dotdot-trailing", "ingest/a/..", "'..' component"),
    ("dot", "ingest/./a.jpg", "'.' component"),
    ("absolute", "/etc/passwd", "absolute"),
    ("absolute-ingest", "/ingest/a.jpg", "absolute"),
    ("nul", "ingest/a\x00.jpg", "NUL"),
    ("empty", "", "empty"),
    ("double-slash", "ingest//a.jpg", "empty"),
    ("trailing-slash", "ingest/a/", "empty"),
    ("too-long", "ingest/" + "a/" * 600 + "b", "at most 1024 bytes"),
    ("long-component", "ingest/" + "x" * 256, "over 255 bytes"),
    ("long-unicode-component", "ingest/" + "é" * 128, "over 255 bytes"),
    ("lone-surrogate", "ingest/\udcff.jpg", "not valid UTF-8"),
]


@pytest.mark.parametrize(("key", "fragment"), [(k, f) for _, k, f in HOSTILE], ids=[i for i, _, _ in HOSTILE])
def test_hostile_keys_are_refused_with_a_clear_message(key: str, fragment: str) -> None:
    with pytest.raises(RefusedPath) as info:
        check_key(key)
    assert fragment in info.value.message


ACCEPTED = [
    ("plain", "ingest/photos/cat.jpg"),
    ("spaces", "ingest/my photos/a cat.jpg"),
    ("plus", "ingest/c++/a+b.jpg"),
    ("unicode", "ingest/фото/猫.jpg"),
    ("dots-in-name", "ingest/..hidden/a..b.jpg"),
    ("leading-dash", "ingest/-rf.jpg"),
    ("exactly-1024-bytes", "ingest/" + "/".join(["a" * 200] * 5)[: MAX_KEY_BYTES - 7]),
    ("component-255", "ingest/" + "y" * 255),
]


@pytest.mark.parametrize("key", [k for _, k in ACCEPTED], ids=[i for i, _ in ACCEPTED])
def test_ordinary_and_odd_but_safe_keys_are_accepted(key: str) -> None:
    assert check_key(key).as_posix() == key


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("New+File.jpg", "New File.jpg"),
        ("Happy%20Face.jpg", "Happy Face.jpg"),
        ("a%2Bb.jpg", "a+b.jpg"),
        ("a%252B.jpg", "a%2B.jpg"),  # decoded once: a literal %2B in a name survives
        ("%E7%8C%AB.jpg", "猫.jpg"),
    ],
    ids=["plus-is-space", "percent-20", "percent-2B-is-plus", "decoded-exactly-once", "utf8"],
)
def test_s3_notification_keys_are_decoded_exactly_once(raw: str, decoded: str) -> None:
    assert decode_s3_notification_key(raw) == decoded


def test_inputs_outside_the_ingest_prefix_are_none_not_errors(mount: Path) -> None:
    cfg = MountConfig.load(mount)
    assert input_from_path(cfg, "workspace/image-resize/a.jpg") is None
    assert input_from_path(cfg, "ingest") is None  # the prefix itself is not an input
    assert input_from_path(cfg, "ingestion/a.jpg") is None  # a prefix match must be a whole component
    ref = input_from_path(cfg, "ingest/a/b.jpg")
    assert ref is not None
    assert ref.name == PurePosixPath("a/b.jpg")


def test_bucket_prefix_is_stripped_from_event_keys(mount: Path) -> None:
    cfg = MountConfig.load(mount, bucket_prefix="media/")
    ref = input_from_bucket_key(cfg, "media/ingest/x.jpg")
    assert ref is not None and ref.rel == PurePosixPath("ingest/x.jpg")
    assert input_from_bucket_key(cfg, "ingest/x.jpg") is None
    assert input_from_bucket_key(cfg, "other/ingest/x.jpg") is None


def test_a_symlink_that_leaves_ingest_is_refused(mount: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"secret")
    (mount / "ingest" / "link.jpg").symlink_to(secret)
    (mount / "workspace").mkdir()
    (mount / "ingest" / "to-workspace").symlink_to(mount / "workspace")
    cfg = MountConfig.load(mount)
    for name in ("ingest/link.jpg", "ingest/to-workspace/x.jpg"):
        ref = input_from_path(cfg, name)
        assert ref is not None
        with pytest.raises(RefusedPath, match="outside ingest/"):
            resolve_input(cfg, ref)


def test_a_symlink_that_stays_inside_ingest_is_followed(mount: Path) -> None:
    (mount / "ingest" / "real.jpg").write_bytes(b"x")
    (mount / "ingest" / "alias.jpg").symlink_to("real.jpg")
    cfg = MountConfig.load(mount)
    ref = input_from_path(cfg, "ingest/alias.jpg")
    assert ref is not None
    assert resolve_input(cfg, ref) == (mount / "ingest" / "real.jpg").resolve()


def test_output_names_cannot_leave_the_run_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert confine_output(run_dir, "a/b.jpg") == run_dir / "a" / "b.jpg"
    for bad in ("../x", "/abs", "a/../../x", "a\x00b"):
        with pytest.raises(RefusedPath):
            confine_output(run_dir, bad)
    os.symlink(tmp_path, run_dir / "escape")
    with pytest.raises(RefusedPath, match="leave its run directory"):
        confine_output(run_dir, "escape/x.jpg")


def test_configuration_explicit_arguments_beat_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_root, arg_root = tmp_path / "env", tmp_path / "arg"
    env_root.mkdir()
    arg_root.mkdir()
    monkeypatch.setenv("MOUNTWORKS_MOUNT", str(env_root))
    monkeypatch.setenv("MOUNTWORKS_INGEST_PREFIX", "incoming")
    assert MountConfig.load().root == env_root.resolve()
    assert MountConfig.load().ingest_prefix == "incoming"
    cfg = MountConfig.load(arg_root, ingest_prefix="in/box")
    assert (cfg.root, cfg.ingest_prefix, cfg.workspace_prefix) == (arg_root.resolve(), "in/box", "workspace")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"ingest_prefix": "../x"}, "plain relative folder"),
        ({"ingest_prefix": "workspace"}, "must not overlap"),
        ({"workspace_prefix": "ingest/out"}, "must not overlap"),
        ({"claim_lease_seconds": 0}, "must be positive"),
    ],
    ids=["escaping-prefix", "same-prefix", "nested-prefix", "zero-lease"],
)
def test_bad_configuration_is_a_usage_error(mount: Path, kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        MountConfig.load(mount, **kwargs)  # type: ignore[arg-type]


def test_in_lambda_the_root_must_be_under_mnt(tmp_path: Path) -> None:
    lambda_env = {"AWS_LAMBDA_FUNCTION_NAME": "fn"}
    with pytest.raises(UsageError, match="must start with /mnt/"):
        MountConfig.load(tmp_path, environ=lambda_env)
    with pytest.raises(UsageError, match="no mount root"):
        MountConfig.load(environ={})


@pytest.mark.parametrize(("files", "environ", "cpus"), [
    ({}, {}, None),  # no quota: the CPUs it may run on
    ({"cpu.max": "max 100000\n"}, {}, None),
    ({"cpu.max": "150000 100000\n"}, {}, 1.5),  # cgroup v2: docker run --cpus 1.5
    ({"cpu.max": "50000 100000\n"}, {}, 1.0),  # never less than one
    ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, {}, 2.0),  # cgroup v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, {}, None),
    ({"cpu.max": "150000 100000\n"}, {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048"}, 2048 / 1769),  # Lambda's share
    ({}, {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024"}, 1.0),
])
def test_function_cpus_is_what_the_process_can_keep_busy(tmp_path: Path, files: dict[str, str],
                                                         environ: dict[str, str], cpus: float | None) -> None:
    """A container's CPU quota or Lambda's share of a vCPU per 1,769 MB, not the CPUs the
    machine shows (a 2-CPU container on a 64-CPU host would start 64 page processes or jobs)."""
    from shared.config import function_cpus

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    visible = float(len(os.sched_getaffinity(0)))
    expected = visible if cpus is None else min(visible, cpus)
    assert function_cpus(environ, cgroup=tmp_path) == pytest.approx(max(1.0, expected))


@pytest.mark.parametrize(("files", "environ", "mb"), [
    ({"memory.max": "536870912\n"}, {}, 512),  # cgroup v2: docker run -m 512m
    ({"memory.max": "max\n"}, {}, None),
    ({"memory/memory.limit_in_bytes": "1073741824\n"}, {}, 1024),  # cgroup v1 (it was not read)
    ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, {}, None),  # v1's "unlimited"
    ({"memory.max": "536870912\n"}, {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008"}, 3008),  # Lambda's MemorySize
])
def test_function_memory_is_the_containers_limit_v1_or_v2(tmp_path: Path, files: dict[str, str],
                                                          environ: dict[str, str], mb: int | None) -> None:
    from shared.config import function_memory_mb

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    physical = (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) >> 20
    expected = mb if environ else physical if mb is None else min(physical, mb)
    assert function_memory_mb(environ, cgroup=tmp_path) == expected
