"""video-transcode's deployment (read by ``make deploy-files``, never imported at run time).

The segment fan-out (``VideoSegmentFunction``, ``VideoFanoutFunction`` and their roles,
log groups and alarms) runs this same image with other commands; it is written by hand
in ``template.yaml``, right after this worker's generated resources.
"""

from __future__ import annotations

from shared.deploy import DeployParts

DEPLOY = DeployParts(
    memory_mb=4096,
    timeout_seconds=900,
    ephemeral_storage_mb=4096,
    batch_size=1,
    max_concurrency=5,
    backfill_batch_size=1,
    requirements=(
        "# ffmpeg-python builds the command lines; the ffmpeg and ffprobe binaries come from a static",
        "# build (see container/Dockerfile). Pillow measures poster-frame brightness.",
        "ffmpeg-python>=0.2",
        "pillow>=11.0",
        "# The segment fan-out's orchestrator (workers/video_transcode/durable.py) is a Lambda durable",
        "# function deployed from this same image.",
        "aws-durable-execution-sdk-python>=1.0",
    ),
    dockerfile_lines=(
        "# template.yaml also runs this image as the segment fan-out, with another command:",
        "# workers.video_transcode.durable.orchestrate (durable) and .segment_handler.",
        "# The worker finds ffmpeg on PATH and ffprobe beside it (its imageio-ffmpeg fallback",
        "# is never needed, so that 170 MB wheel stays out of the image).",
        "COPY --from=ffmpeg-static /ffmpeg /ffprobe /usr/local/bin/",
    ),
)
