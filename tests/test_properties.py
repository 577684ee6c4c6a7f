"""Property-based: no generated key, event field or output name reaches outside its place.

Whatever hypothesis generates, a key either is refused with RefusedPath, or becomes an
input that lies inside ``ingest/``; an output name either is refused or lands inside
its run directory; an event either is a usage error or gives items that hold the same.

"Refused or confined" would also hold for code that refused everything, so each test
also draws from ``SAFE_NAMES`` (ordinary relative names: any UTF-8 text in short
components, none of them empty, ``.`` or ``..``), which must be accepted and confined.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shared.config import MountConfig
from shared.errors import RefusedPath, UsageError
from shared.events import sqs_body_items, work_items
from shared.paths import check_key, confine_output, input_from_bucket_key, input_from_path, resolve_input

PIECES = st.sampled_from(["..", ".", "", "ingest", "workspace", "a", "é", "\x00", "~", "-rf", " ", "+", "%2B",
                          "%2e%2e", "..\\..", "a" * 300, "/"])
KEYS = st.one_of(
    st.text(max_size=80),
    st.lists(st.one_of(PIECES, st.text(max_size=12)), max_size=8).map("/".join),
    st.lists(PIECES, max_size=6).map(lambda parts: "ingest/" + "/".join(parts)),
)
# Names that must be accepted: well under the 255-byte component and 1,024-byte key limits.
SAFE_PART = st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=12).filter(
    lambda part: part not in (".", ".."))
SAFE_NAMES = st.lists(SAFE_PART, min_size=1, max_size=5).map("/".join)
SAFE_KEYS = SAFE_NAMES.map(lambda name: "ingest/" + name)
# (key, whether it must be accepted): about half of the examples are safe keys
CASES = st.one_of(KEYS.map(lambda key: (key, False)), SAFE_KEYS.map(lambda key: (key, True)))
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _cfg(tmp_path: Path) -> MountConfig:
    root = tmp_path / "mount"
    (root / "ingest").mkdir(parents=True, exist_ok=True)
    (root / "workspace").mkdir(exist_ok=True)
    return MountConfig.load(root)


def _inside(path: Path, folder: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


@SETTINGS
@given(case=CASES)
def test_any_key_is_refused_or_confined_to_ingest(tmp_path: Path, case: tuple[str, bool]) -> None:
    key, safe = case
    cfg = _cfg(tmp_path)
    for convert in (input_from_path, input_from_bucket_key):
        try:
            ref = convert(cfg, key)
        except RefusedPath:
            assert not safe, f"{convert.__name__} refused a safe key {key!r}"
            event("refused")
            continue
        if ref is None:
            assert not safe, f"{convert.__name__} found the safe key {key!r} outside ingest/"
            event("outside ingest/")
            continue
        event("accepted")
        assert ref.rel.parts[0] == "ingest" and ".." not in ref.rel.parts
        assert _inside(resolve_input(cfg, ref), cfg.ingest_dir)


@SETTINGS
@given(case=CASES)
def test_encoded_notification_keys_are_refused_or_confined(tmp_path: Path, case: tuple[str, bool]) -> None:
    raw, safe = case
    cfg = _cfg(tmp_path)
    event_ = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                           "s3": {"object": {"key": urllib.parse.quote_plus(raw, safe="/")}}}]}
    items = work_items(event_, cfg)
    if safe:
        assert [item.input is not None for item in items] == [True], (raw, items)
    for item in items:
        if item.input is not None:
            event("accepted")
            assert _inside(resolve_input(cfg, item.input), cfg.ingest_dir)
            assert item.input.rel.as_posix() == raw  # decoded exactly once, back to the original


@SETTINGS
@given(case=st.one_of(KEYS.map(lambda name: (name, False)), SAFE_NAMES.map(lambda name: (name, True))))
def test_any_output_name_is_refused_or_inside_its_run_directory(tmp_path: Path, case: tuple[str, bool]) -> None:
    name, safe = case
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    try:
        target = confine_output(run_dir, name)
    except RefusedPath:
        assert not safe, f"a safe output name {name!r} was refused"
        event("refused")
        return
    event("accepted")
    assert _inside(target.parent, run_dir)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | KEYS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["Records", "s3", "object", "key", "input", "options", "Items", "Key", "BatchInput",
                         "detail", "source", "detail-type", "eventSource", "eventName", "body"]),
        children, max_size=5),
    max_leaves=20,
)
S3_SHAPES = st.fixed_dictionaries({"Records": st.lists(st.fixed_dictionaries(
    {"eventName": JSON, "s3": st.one_of(JSON, st.fixed_dictionaries({"object": st.one_of(
        JSON, st.fixed_dictionaries({"key": st.one_of(KEYS, JSON)}))}))}), min_size=1, max_size=3)})
EVENTBRIDGE_SHAPES = st.fixed_dictionaries({"source": st.just("aws.s3"), "detail-type": st.sampled_from(
    ["Object Created", "Object Deleted"]), "detail": st.one_of(JSON, st.fixed_dictionaries(
        {"object": st.one_of(JSON, st.fixed_dictionaries({"key": st.one_of(KEYS, JSON)}))}))})


@SETTINGS
@given(event=st.one_of(JSON, S3_SHAPES, EVENTBRIDGE_SHAPES))
def test_any_event_is_a_usage_error_or_confined_items(tmp_path: Path, event: object) -> None:
    cfg = _cfg(tmp_path)
    try:
        items = work_items(event, cfg)
    except UsageError:
        items = sqs_body_items(json.dumps(event), cfg)  # the SQS path never raises
    except (AttributeError, TypeError, KeyError) as exc:  # a crash on hostile input would be a bug
        raise AssertionError(f"event parsing crashed on {event!r}: {exc!r}") from exc
    for item in items:
        if item.input is not None:
            assert _inside(resolve_input(cfg, item.input), cfg.ingest_dir)


@SETTINGS
@given(name=SAFE_NAMES, shape=st.sampled_from(["s3", "eventbridge", "direct", "map"]))
def test_safe_keys_in_every_trigger_shape_become_confined_inputs(tmp_path: Path, name: str, shape: str) -> None:
    cfg = _cfg(tmp_path)
    key = "ingest/" + name
    encoded = urllib.parse.quote_plus(key, safe="/")
    shapes: dict[str, object] = {
        "s3": {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                            "s3": {"object": {"key": encoded}}}]},
        "eventbridge": {"source": "aws.s3", "detail-type": "Object Created", "detail": {"object": {"key": encoded}}},
        "direct": {"input": key},
        "map": {"Items": [{"Key": key}]},
    }
    items = work_items(shapes[shape], cfg)
    assert [item.input.rel.as_posix() if item.input else None for item in items] == [key], items
    assert items[0].input is not None and _inside(resolve_input(cfg, items[0].input), cfg.ingest_dir)


@SETTINGS
@given(case=st.one_of(st.text(min_size=1, max_size=40).filter(lambda k: "\x00" not in k).map(lambda k: (k, False)),
                      SAFE_NAMES.map(lambda k: (k, True))))
def test_check_key_round_trips_what_it_accepts(case: tuple[str, bool]) -> None:
    key, safe = case
    try:
        path = check_key(key)
    except RefusedPath:
        assert not safe, f"a safe key {key!r} was refused"
        event("refused")
        return
    event("accepted")
    assert path.as_posix() == key
