"""Lambda entry point of the video-transcode worker."""

from __future__ import annotations

from shared.runtime import make_handler
from workers.video_transcode import SPEC

handler = make_handler(SPEC)
