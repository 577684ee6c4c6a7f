"""``verify``: re-hash every committed output against its manifest.

Readers trust only what a manifest lists, so this is the check an operator runs after
an incident: every listed output must exist, lie under its worker's own prefix, and
have the recorded size and sha256.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from shared.config import MountConfig
from shared.errors import EXIT_DONE, EXIT_VERIFY_FAILED, UsageError
from shared.paths import check_key
from shared.runs import FoundManifest, hash_file, manifests_under


@dataclass
class VerifyReport:
    manifests: int = 0
    outputs: int = 0
    problems: list[str] = field(default_factory=list)
    bad_manifests: set[str] = field(default_factory=set)

    @property
    def exit_code(self) -> int:
        return EXIT_VERIFY_FAILED if self.problems else EXIT_DONE

    def to_json(self) -> dict[str, Any]:
        return {"manifests": self.manifests, "outputs": self.outputs,
                "ok": self.manifests - len(self.bad_manifests), "bad": sorted(self.bad_manifests),
                "problems": self.problems}


def verify_manifest(cfg: MountConfig, found: FoundManifest) -> tuple[int, list[str]]:
    """How many outputs one manifest lists, and its problems (none when it holds)."""
    rel = found.path.relative_to(cfg.root).as_posix()
    try:
        if found.record is None:
            raise ValueError(found.problem)
        outputs = found.record["outputs"]
        worker = found.record["worker"]
    except (ValueError, KeyError, TypeError) as exc:
        return 0, [f"{rel}: {found.problem or f'unreadable manifest ({exc})'}"]
    problems = []
    owner = f"{cfg.workspace_prefix}/{worker}/"
    for output in outputs:
        name = str(output.get("path", ""))
        try:
            check_key(name, what="output path")
        except Exception as exc:
            problems.append(f"{rel}: output {name!r} is not a safe relative path ({exc})")
            continue
        if not name.startswith(owner):
            problems.append(f"{rel}: output {name} lies outside {owner}")
            continue
        path = cfg.root / name
        if not path.is_file():
            problems.append(f"{rel}: output {name} is missing")
            continue
        digest, size = hash_file(path)
        if size != output.get("size"):
            problems.append(f"{rel}: output {name} has {size} bytes, the manifest says {output.get('size')}")
        elif digest != output.get("sha256"):
            problems.append(f"{rel}: output {name} does not match its sha256")
    return len(outputs), problems


def _tops(cfg: MountConfig, below: str) -> list[Path]:
    """Where the runs of ``below`` are: a path under ``ingest/`` (an input or a folder) is
    its relative path below every worker's folder; any other path is itself."""
    key = check_key(below.strip("/"), what="verify path")
    ingest = PurePosixPath(cfg.ingest_prefix)
    if key != ingest and ingest not in key.parents:
        top = cfg.root.joinpath(*key.parts)
        return [top] if top.exists() else []
    rel = key.relative_to(ingest).parts
    workers = sorted(cfg.workspace_dir.iterdir()) if cfg.workspace_dir.is_dir() else []
    return [w.joinpath(*rel) for w in workers if w.joinpath(*rel).is_dir()]


def verify_tree(cfg: MountConfig, below: str | None = None) -> VerifyReport:
    """Verify every manifest, or those of ``below``; a ``below`` with none is a usage error
    (a typo in the path must not pass as "everything holds")."""
    tops = [cfg.workspace_dir] if not below else _tops(cfg, below)
    report = VerifyReport()
    for top in tops:
        for found in manifests_under(top):
            report.manifests += 1
            listed, problems = verify_manifest(cfg, found)
            report.outputs += listed
            if problems:
                report.bad_manifests.add(found.path.relative_to(cfg.root).as_posix())
                report.problems.extend(problems)
    if below and not report.manifests:
        raise UsageError(f"nothing to verify at {below}: no manifest there (give an input or a folder "
                         f"under {cfg.ingest_prefix}/, or a path under {cfg.workspace_prefix}/)")
    return report
