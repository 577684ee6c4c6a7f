#!/usr/bin/env bash
# The main job on sample data: a local folder stands in for the S3 Files mount.
#   bash samples/demo.sh [MOUNT_DIR]      (default: ./demo-mount)
# Generates sample inputs under MOUNT_DIR/ingest/, backfills them with every worker (the
# JSON summary goes to MOUNT_DIR/backfill-summary.json, a one-page HTML report to
# MOUNT_DIR/report.html), verifies every manifest, and lists what was committed.
set -euo pipefail
root="${1:-demo-mount}"
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-python3}"
mkdir -p "$root"
echo "== sample inputs in $root/ingest/" >&2
"$py" "$here/make_samples.py" "$root" >&2
echo "== mountworks backfill --root $root --jobs 2 --report $root/report.html > $root/backfill-summary.json" >&2
set +e
"$py" -m workers backfill --root "$root" --jobs 2 --report "$root/report.html" > "$root/backfill-summary.json"
status=$?
set -e
echo "== mountworks verify --root $root" >&2
"$py" -m workers verify --root "$root" >/dev/null && echo "verify: every manifest holds" >&2
echo "== committed outputs (paths relative to $root)" >&2
"$py" - "$root" <<'PY' >&2
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
for record in sorted((root / "workspace").rglob("*.json")):
    if record.name not in ("manifest.json", "error.json"):
        continue
    doc = json.loads(record.read_text())
    print(f"{doc['worker']:<18} {doc['input']['path']}")
    if record.name == "error.json":
        print(f"{'':<18}   error: {doc['error']['code']}: {doc['error']['message']}")
    for out in doc.get("outputs", []):
        print(f"{'':<18}   {out['path']}  ({out['size']} bytes, {out['media_type']})")
PY
echo "== the JSON summary is $root/backfill-summary.json; open the report: $root/report.html" >&2
exit $status
