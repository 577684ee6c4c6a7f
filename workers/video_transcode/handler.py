"""Lambda entry point of the video-transcode worker."""

from __future__ import annotations

from shared.runtime import make_handler

handler = make_handler("video-transcode")
