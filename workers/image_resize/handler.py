"""Lambda entry point of the image worker (``workers.image_resize.handler.handler``)."""

from __future__ import annotations

from shared.runtime import make_handler

handler = make_handler("image-resize")
