"""parquet-normalize's deployment (read by ``make deploy-files``, never imported at run time)."""

from __future__ import annotations

from shared.deploy import DeployParts

DEPLOY = DeployParts(
    memory_mb=3008,
    timeout_seconds=900,
    ephemeral_storage_mb=2048,
    batch_size=1,
    max_concurrency=5,
    backfill_batch_size=1,
    requirements=(
        "# CSV/TSV/JSON-Lines/Parquet (+gzip, zstd, bz2) through pyarrow; numpy for column statistics;",
        "# PyYAML for schema contracts written in YAML.",
        "pyarrow>=17",
        "numpy>=1.26",
        "pyyaml>=6",
    ),
)
