"""Video files: each format holds every frame at the job's fps with the parameters text
(any script) read back, and the same frames give the same bytes."""

import io

import av
import numpy as np
import pytest
from PIL import Image, ImageSequence

from diffleet_core.resources.generation_job import VideoFormat
from diffleet_worker.video import encode_video, read_video_parameters

TEXT = "a cat 🐱 in the rain, 雨\nSteps: 2, Seed: 1, Frames: 5, FPS: 8"


def noise_frames(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(count)
    ]


def decoded(data: bytes, video_format: VideoFormat) -> list[np.ndarray]:
    if video_format is VideoFormat.MP4:
        with av.open(io.BytesIO(data), mode="r") as container:
            return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    with Image.open(io.BytesIO(data)) as image:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]


@pytest.mark.parametrize("video_format", list(VideoFormat))
def test_every_frame_and_the_parameters_are_in_the_file(video_format: VideoFormat) -> None:
    frames = noise_frames(5)
    video = encode_video(frames, video_format, 8, 100, TEXT)
    assert (video.frames, video.fps, video.duration_seconds) == (5, 8, 0.625)
    assert read_video_parameters(video.data) == TEXT
    pictures = decoded(video.data, video_format)
    assert [picture.shape for picture in pictures] == [(48, 64, 3)] * 5
    if video_format is not VideoFormat.MP4:  # lossless WebP; GIF's palette close to it
        error = np.abs(pictures[2].astype(int) - np.asarray(frames[2], dtype=int)).mean()
        assert error < (1 if video_format is VideoFormat.WEBP else 40)
    assert encode_video(frames, video_format, 8, 100, TEXT).data == video.data


def test_an_mp4_plays_at_the_job_fps() -> None:
    video = encode_video(noise_frames(4), VideoFormat.MP4, 7, 90, TEXT)
    with av.open(io.BytesIO(video.data)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 7
        assert stream.frames == 4
        assert stream.codec_context.name == "h264"


def test_gif_and_webp_frames_last_one_fps_step() -> None:
    frames = noise_frames(3)
    for video_format in (VideoFormat.GIF, VideoFormat.WEBP):
        data = encode_video(frames, video_format, 10, 90, TEXT).data
        with Image.open(io.BytesIO(data)) as image:
            image.seek(1)
            image.load()  # WebP reads a frame's duration with its pixels
            assert image.info["duration"] == 100
