"""Output image files: PNG, JPEG or WebP, each carrying the generation parameters where
image tools read them, as Automatic1111 writes them: a PNG `parameters` text chunk, and
for JPEG and WebP the EXIF UserComment, UTF-16 behind the "UNICODE" prefix
(`piexif.helper.UserComment.dump(text, encoding="unicode")`). The same image and text
give the same bytes."""

import io

import piexif
import piexif.helper
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from diffleet_core.resources.generation_job import OutputFormat

PARAMETERS_KEY = "parameters"
PIL_FORMATS = {OutputFormat.PNG: "PNG", OutputFormat.JPEG: "JPEG", OutputFormat.WEBP: "WEBP"}
# WebP has a lossless mode and JPEG none: WebP at the top quality is lossless, so what
# lossy compression would erase (the invisible watermark's bits) survives in it.
LOSSLESS_WEBP_QUALITY = 100


def encode(image: Image.Image, output_format: OutputFormat, quality: int, parameters: str) -> bytes:
    """The image as a file of `output_format`, with `parameters` in it; `quality` (1..100)
    applies to JPEG and WebP. An RGBA image stays RGBA in PNG and WebP."""
    if output_format is OutputFormat.PNG:
        return _png(image, parameters)
    options: dict[str, object] = {"quality": quality, "exif": exif_with_parameters(parameters)}
    if output_format is OutputFormat.WEBP and quality == LOSSLESS_WEBP_QUALITY:
        # exact: the colours of transparent pixels too, which libwebp would zero.
        options |= {"lossless": True, "exact": True}
    buffer = io.BytesIO()
    # WebP keeps an alpha channel (a removed background); JPEG has none.
    keep_alpha = output_format is OutputFormat.WEBP and image.mode == "RGBA"
    pixels = image if keep_alpha else image.convert("RGB")
    pixels.save(buffer, format=PIL_FORMATS[output_format], **options)
    return buffer.getvalue()


def read_parameters(data: bytes) -> str | None:
    """The parameters text of a PNG, JPEG or WebP file, None when it carries none."""
    with Image.open(io.BytesIO(data)) as image:
        text = image.info.get(PARAMETERS_KEY)
        exif = image.info.get("exif")
    if isinstance(text, str):
        return text
    if isinstance(exif, bytes):
        comment = piexif.load(exif).get("Exif", {}).get(piexif.ExifIFD.UserComment)
        if isinstance(comment, bytes):
            return str(piexif.helper.UserComment.load(comment))
    return None


def _png(image: Image.Image, parameters: str) -> bytes:
    """A tEXt chunk holds Latin-1 only (PNG specification), so text beyond it (emoji, CJK,
    RTL scripts, most combining marks) goes in an iTXt chunk, UTF-8; readers such as
    Pillow's `Image.info` return both kinds as the same str."""
    info = PngInfo()
    if _is_latin1(parameters):
        info.add_text(PARAMETERS_KEY, parameters)
    else:
        info.add_itxt(PARAMETERS_KEY, parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def exif_with_parameters(parameters: str) -> bytes:
    """EXIF holding `parameters` as A1111's UserComment (stills and animated WebP)."""
    comment = piexif.helper.UserComment.dump(parameters, encoding="unicode")
    return bytes(piexif.dump({"Exif": {piexif.ExifIFD.UserComment: comment}}))


def _is_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True
