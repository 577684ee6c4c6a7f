"""image-resize's deployment (read by ``make deploy-files``, never imported at run time)."""

from __future__ import annotations

from shared.deploy import DeployParts

DEPLOY = DeployParts(
    memory_mb=2048,
    timeout_seconds=300,
    ephemeral_storage_mb=1024,
    batch_size=10,
    max_concurrency=20,
    backfill_batch_size=20,
    requirements=(
        "# Image renditions: Pillow (JPEG PNG WebP GIF TIFF BMP AVIF) and pillow-heif (HEIC/HEIF).",
        "pillow>=11.0",
        "pillow-heif>=0.18",
    ),
)
