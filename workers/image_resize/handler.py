"""Lambda entry point of the image worker (``workers.image_resize.handler.handler``)."""

from __future__ import annotations

from shared.runtime import make_handler
from workers.image_resize import SPEC

handler = make_handler(SPEC)
