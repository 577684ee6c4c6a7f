"""image-resize: renditions (sizes x formats) of photos and graphics, with Pillow.

Cheap to import: Pillow (and pillow-heif, for HEIC) load only in :mod:`.core`, the first
time an input is processed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.worker import WorkerSpec
from workers.image_resize import options
from workers.image_resize.sniff import is_image

SPEC = WorkerSpec(
    name="image-resize",
    version="1.1.0",  # 1.1: 2x steps as 2x2 means, bicubic under 2x
    extensions=frozenset({".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp",
                          ".avif", ".heic", ".heif"}),
    sniff=is_image,
    parse_options=options.parse,
    core_module="workers.image_resize.core",
)

if TYPE_CHECKING:  # the typed seam: mypy checks this worker's process() against WorkerCore
    from shared.worker import WorkerCore
    from workers.image_resize import core
    from workers.image_resize.options import Options

    _core: WorkerCore[Options] = core
