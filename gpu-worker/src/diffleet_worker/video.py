"""Output video files: MP4 (H.264 through PyAV), animated WebP or GIF (Pillow), at the
job's frames per second, each carrying the generation parameters (parameters.py) where
tools read them:

- MP4: the container's `comment` tag (ffprobe, PyAV's `container.metadata`; stored as
  the ©cmt atom players show as the comment)
- WebP: the EXIF UserComment, as still WebP outputs carry it (encoding.py)
- GIF: the comment extension, UTF-8

The same frames and text give the same bytes. GIF and WebP store each frame's duration
in whole centiseconds and milliseconds, so fps that do not divide them play at the
nearest step (7 fps: 140 ms a frame in a GIF); a GIF also merges identical consecutive
frames into one longer frame, as Pillow writes it.
"""

import io
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image

from diffleet_core.resources.generation_job import VideoFormat
from diffleet_worker.encoding import LOSSLESS_WEBP_QUALITY, exif_with_parameters, read_parameters

MP4_CODEC = "libx264"
# yuv420p: the H.264 profile every player decodes (browsers, phones).
MP4_PIXEL_FORMAT = "yuv420p"
# x264's constant-quality scale (0 lossless, 51 worst); 18 looks lossless to the eye.
# Macroblock-tree rate control off: with it, the bundled x264 encoded the same frames
# differently from run to run once torch had run in the process (as if it read memory it
# had not written); without it, the same frames give the same bytes.
MP4_OPTIONS: dict[str, object] = {"crf": "18", "x264-params": "mbtree=0"}
MP4_COMMENT = "comment"


@dataclass(frozen=True)
class Video:
    """An encoded clip and what `status.outputs[]` says of it."""

    data: bytes
    format: VideoFormat
    frames: int
    fps: int
    size: tuple[int, int]  # a frame's width and height

    @property
    def duration_seconds(self) -> float:
        return self.frames / self.fps


def encode_video(
    frames: list[Image.Image], video_format: VideoFormat, fps: int, quality: int, parameters: str
) -> Video:
    """The frames as one file of `video_format` at `fps`, with `parameters` in it;
    `quality` (1..100, 100 lossless) applies to WebP."""
    rgb = [frame.convert("RGB") for frame in frames]
    if video_format is VideoFormat.MP4:
        data = _mp4(rgb, fps, parameters)
    elif video_format is VideoFormat.WEBP:
        data = _webp(rgb, fps, quality, parameters)
    else:
        data = _gif(rgb, fps, parameters)
    return Video(data, video_format, len(frames), fps, frames[0].size)


def read_video_parameters(data: bytes) -> str | None:
    """The parameters text of an MP4, animated WebP or GIF file (or of any output image,
    read as encoding.read_parameters does), None when it has none."""
    if data[4:8] == b"ftyp":  # an ISO base media (MP4) file
        with av.open(io.BytesIO(data)) as container:
            return container.metadata.get(MP4_COMMENT)
    with Image.open(io.BytesIO(data)) as image:
        comment = image.info.get("comment")
    if isinstance(comment, bytes):
        return comment.decode("utf-8")
    return read_parameters(data)


def _mp4(frames: list[Image.Image], fps: int, parameters: str) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        container.metadata[MP4_COMMENT] = parameters
        stream = container.add_stream(MP4_CODEC, rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = MP4_PIXEL_FORMAT
        stream.options = MP4_OPTIONS
        for index, frame in enumerate(frames):
            image = av.VideoFrame.from_ndarray(np.asarray(frame), format="rgb24")
            image.pts = index  # in the stream's time base, 1/fps
            container.mux(stream.encode(image))
        container.mux(stream.encode(None))  # flushes the frames the encoder holds back
    return buffer.getvalue()


def _webp(frames: list[Image.Image], fps: int, quality: int, parameters: str) -> bytes:
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="WEBP",
        save_all=True,
        append_images=frames[1:],
        duration=round(1000 / fps),
        loop=0,
        quality=quality,
        lossless=quality == LOSSLESS_WEBP_QUALITY,
        exif=exif_with_parameters(parameters),
    )
    return buffer.getvalue()


def _gif(frames: list[Image.Image], fps: int, parameters: str) -> bytes:
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=round(1000 / fps),
        loop=0,
        comment=parameters.encode("utf-8"),
    )
    return buffer.getvalue()
