"""Customer images made fit for Kimi: every image the drafting worker sends passes through here.

A phone photo is megabytes and thousands of pixels a side; Kimi reads it no better past
:data:`MAX_SIDE` (K2.5's vision encoder sees 14-px patches merged 2×2, one token per 28×28 px),
and the megabytes cost memory, database rows and a request body. So each image is:

* opened only as one of the formats Kimi takes (PNG, JPEG, WebP, GIF) — Pillow's other
  decoders are never reached from a customer's bytes;
* refused, before any pixel is decoded, when its header claims more than :data:`MAX_PIXELS`
  (a "decompression bomb": a few KB of PNG that would inflate to gigabytes);
* decoded at a reduced scale where the format allows (JPEG ``draft``), and refused when what is
  decoded would still pass :data:`MAX_DECODED_PIXELS`; scaled so its longest side is at most
  :data:`MAX_SIDE`, turned upright from its EXIF orientation;
* re-encoded without metadata (EXIF with its GPS position, text chunks, ICC profile): a JPEG
  as JPEG; anything else as PNG (a screenshot's text stays sharp) unless that passes
  :data:`PNG_BUDGET`, when it is a photo and goes as JPEG too.

The work is CPU-bound, so :class:`ImageShrinker` runs it in a thread (the event loop, and with
it every ack, never waits) and at most :data:`CONCURRENT_DECODES` at a time (the memory of a
decode is bounded by :data:`MAX_PIXELS`, and so is the sum).
"""

from __future__ import annotations

import asyncio
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

#: The longest side sent to Kimi: about 56×56 vision tokens on K2.5, plenty for a damaged
#: parcel or a screenshot's text.
MAX_SIDE = 1568
#: The most pixels an image's header may claim (8,000 × 5,000); larger ones are not decoded.
MAX_PIXELS = 40_000_000
#: The most pixels decoded (64 MB as RGBA). A JPEG is decoded at a reduced scale, so this
#: only refuses a PNG, WebP or GIF larger than 16 megapixels (a 5K screenshot is 14.7).
MAX_DECODED_PIXELS = 16_000_000
#: Formats Kimi reads (reference §9); anything else is refused without being decoded.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
JPEG_QUALITY = 85
TOO_LARGE = f"over {MAX_PIXELS // 1_000_000} megapixels"
#: A non-JPEG image is kept as a PNG up to this size; a bigger one is a photo, sent as JPEG.
PNG_BUDGET = 1024 * 1024
CONCURRENT_DECODES = 2


class ImageRefused(Exception):
    """An image that is not sent to the model; ``reason`` is the card's wording."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ShrunkImage:
    """An image as it is stored and sent: re-encoded bytes, their type and size in pixels."""

    content_type: str
    data: bytes
    width: int
    height: int


def shrink(data: bytes) -> ShrunkImage:
    """``data`` scaled to at most :data:`MAX_SIDE` a side and re-encoded without metadata, or
    :class:`ImageRefused`. Blocking: call it through :class:`ImageShrinker`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                return _shrunk(image)
    except ImageRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRefused(TOO_LARGE) from None
    except UnidentifiedImageError:
        raise ImageRefused("not a PNG, JPEG, WebP or GIF image") from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise ImageRefused("the image is damaged and cannot be read") from None


def _shrunk(image: Image.Image) -> ShrunkImage:
    width, height = image.size
    if width < 1 or height < 1 or width * height > MAX_PIXELS:
        raise ImageRefused(f"{width}×{height} px: {TOO_LARGE}")
    kind = image.format
    image.seek(0)  # an animated GIF or WebP: its first frame
    scale = min(1.0, MAX_SIDE / max(width, height))
    # A JPEG decodes at 1/2, 1/4 or 1/8 scale: a 48 MP photo never exists at full size in memory.
    image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
    if image.width * image.height > MAX_DECODED_PIXELS:
        raise ImageRefused(f"{width}×{height} px: over {MAX_DECODED_PIXELS // 1_000_000} megapixels for a {kind}")
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    upright = ImageOps.exif_transpose(image)  # on the small copy: EXIF says which way is up
    if kind != "JPEG":  # a screenshot stays sharp as a PNG, unless it is really a photo
        png = _encoded(upright, "PNG")
        if len(png.data) <= PNG_BUDGET:
            return png
    return _encoded(upright, "JPEG")


def _encoded(image: Image.Image, kind: str) -> ShrunkImage:
    """``image`` saved as a new file: no EXIF, text chunk or profile is carried over."""
    transparent = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    out = io.BytesIO()
    if kind == "PNG":
        image.convert("RGBA" if transparent else "RGB").save(out, "PNG")
    else:
        opaque = image.convert("RGBA")
        flat = Image.new("RGB", opaque.size, "white")
        flat.paste(opaque, mask=opaque.getchannel("A"))
        flat.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return ShrunkImage(f"image/{kind.lower()}", out.getvalue(), image.width, image.height)


class ImageShrinker:
    """Runs :func:`shrink` off the event loop, a few at a time (see the module)."""

    def __init__(self, concurrency: int = CONCURRENT_DECODES) -> None:
        self._turns = asyncio.Semaphore(concurrency)

    async def shrink(self, data: bytes) -> ShrunkImage:
        async with self._turns:
            return await asyncio.to_thread(shrink, data)
