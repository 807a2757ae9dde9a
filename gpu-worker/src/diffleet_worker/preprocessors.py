"""ControlNet preprocessors: an input image turned into the conditioning a ControlNet of
its type was trained on. The weight-free ones (core's WEIGHT_FREE) are computed here, as
Automatic1111's ControlNet extension and controlnet-aux compute them; depth and
segmentation run a detector model (detectors.py). Each gives a 3-channel RGB image of the
input's size."""

from collections.abc import Callable, Mapping

import cv2
import numpy as np
from PIL import Image

from diffleet_core.preprocessors import preprocessor_problem
from diffleet_core.resources.generation_job import ControlType, Preprocess
from diffleet_worker.detectors import Detector, detect
from diffleet_worker.images import canny_edges

# tile_resample: the image at half its size, scaled back up: a tile ControlNet was trained
# to add the detail such a blurred copy lacks.
TILE_DOWNSAMPLE = 2
# scribble_xdog: the difference of two Gaussian blurs, thresholded (A1111's defaults).
XDOG_SIGMAS = (0.5, 5.0)
XDOG_THRESHOLD = 32
# lineart_standard: how dark a pixel is against its Gaussian-blurred surroundings
# (controlnet-aux's defaults).
LINEART_SIGMA = 6.0
LINEART_THRESHOLD = 8
LINEART_MIN_SCALE = 16.0


class PreprocessError(Exception):
    """No preprocessor can run for a control entry; the message names the field."""


def tile_resample(image: Image.Image) -> Image.Image:
    rgb = np.asarray(image.convert("RGB"))
    height, width = rgb.shape[:2]
    small = cv2.resize(
        rgb,
        (max(1, width // TILE_DOWNSAMPLE), max(1, height // TILE_DOWNSAMPLE)),
        interpolation=cv2.INTER_AREA,
    )
    return Image.fromarray(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC))


def scribble_xdog(image: Image.Image) -> Image.Image:
    """White strokes on black where the image has edges, as a hand scribble has them."""
    rgb = np.asarray(image.convert("RGB")).astype(np.float32)
    fine, coarse = (cv2.GaussianBlur(rgb, (0, 0), sigma) for sigma in XDOG_SIGMAS)
    dog = (255 - np.min(coarse - fine, axis=2)).clip(0, 255)
    strokes = np.where(2 * (255 - dog) > XDOG_THRESHOLD, 255, 0).astype(np.uint8)
    return _gray_to_rgb(strokes)


def lineart_standard(image: Image.Image) -> Image.Image:
    """White lines on black: how much darker each pixel is than its blurred surroundings,
    scaled by the median line intensity."""
    rgb = np.asarray(image.convert("RGB")).astype(np.float32)
    blurred = cv2.GaussianBlur(rgb, (0, 0), LINEART_SIGMA)
    intensity = np.min(blurred - rgb, axis=2).clip(0, 255)
    lines = intensity[intensity > LINEART_THRESHOLD]
    scale = max(LINEART_MIN_SCALE, float(np.median(lines))) if lines.size else LINEART_MIN_SCALE
    return _gray_to_rgb((intensity / scale * 127).clip(0, 255).astype(np.uint8))


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.stack([gray] * 3, axis=-1), mode="RGB")


# The weight-free preprocessors, for core's WEIGHT_FREE types.
PREPROCESSORS: dict[ControlType, Callable[[Image.Image], Image.Image]] = {
    ControlType.CANNY: canny_edges,
    ControlType.TILE: tile_resample,
    ControlType.SCRIBBLE: scribble_xdog,
    ControlType.LINEART: lineart_standard,
}
# The name the parameters give each preprocessor (A1111's module names where it has one).
MODULE_NAMES: dict[ControlType, str] = {
    ControlType.CANNY: "canny",
    ControlType.TILE: "tile_resample",
    ControlType.SCRIBBLE: "scribble_xdog",
    ControlType.LINEART: "lineart_standard",
    ControlType.DEPTH: "depth",
    ControlType.SEGMENTATION: "segmentation",
}


def module_name(control_type: ControlType, preprocess: Preprocess) -> str:
    """The preprocessor an entry ran: "none" for an image used as sent."""
    if preprocess is Preprocess.NONE:
        return "none"
    return MODULE_NAMES.get(control_type, control_type.value)


def conditioning(
    field: str,
    image: Image.Image,
    control_type: ControlType,
    preprocess: Preprocess,
    detectors: Mapping[ControlType, Detector],
) -> Image.Image:
    """The conditioning image of one control entry (`field` names it in errors)."""
    if preprocess is Preprocess.NONE:
        return image
    # Admission refuses what has no preprocessor; an order can still lack its detector.
    problem = preprocessor_problem(field, control_type, detector_found=control_type in detectors)
    if problem is not None:
        raise PreprocessError(problem)
    weight_free = PREPROCESSORS.get(control_type)
    if weight_free is not None:
        return weight_free(image)
    return detect(detectors[control_type], image)
