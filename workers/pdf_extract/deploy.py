"""pdf-extract's deployment (read by ``make deploy-files``, never imported at run time)."""

from __future__ import annotations

from shared.deploy import DeployParts

DEPLOY = DeployParts(
    memory_mb=2048,
    timeout_seconds=600,
    ephemeral_storage_mb=1024,
    batch_size=5,
    max_concurrency=10,
    backfill_batch_size=5,
    requirements=(
        "# PDF text from PDFium (pypdfium2: wheels for x86_64 and aarch64); pypdf for the structure (metadata,",
        "# outline, forms, attachments, images); cryptography for AES-encrypted PDFs; Pillow to decode images;",
        "# brotli for BrotliDecode streams (PDF's 2025 extension), which pypdf reads only with it.",
        "pypdfium2>=4.30",
        "pypdf>=7.1",
        "cryptography>=42",
        "pillow>=11.0",
        "brotli>=1.1",
    ),
)
