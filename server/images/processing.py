"""Decides from the bytes, never the file name, whether a file is an image we accept."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image as PILImage
from PIL import ImageFile, ImageOps, UnidentifiedImageError

from server.kit.storage import Storage

# Pillow format name -> (our short name, the only Content-Type we ever serve it with)
ALLOWED_FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("jpeg", "image/jpeg"),
    "PNG": ("png", "image/png"),
    "WEBP": ("webp", "image/webp"),
    "BMP": ("bmp", "image/bmp"),
    "TIFF": ("tiff", "image/tiff"),
}
CONTENT_TYPES = {short: mime for short, mime in ALLOWED_FORMATS.values()}
# Short name -> the extensions of that format; the first is the one downloads get.
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "jpeg": (".jpg", ".jpeg", ".jpe"),
    "png": (".png",),
    "webp": (".webp",),
    "bmp": (".bmp",),
    "tiff": (".tif", ".tiff"),
}


def download_name(filename: str, short_format: str) -> str:
    """The uploaded name with the extension of the format the bytes really are: a PNG
    uploaded as ``poly.html`` downloads as ``poly.png``, so no browser or desktop
    opens it as a page."""
    extensions = EXTENSIONS[short_format]
    path = PurePosixPath(filename)
    if path.suffix.lower() in extensions:
        return filename
    stem = path.stem if path.suffix else filename
    return f"{stem or 'image'}{extensions[0]}"


# Truncated files must fail, never be silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def _open(path: Path) -> PILImage.Image:
    """Pillow's own ``Image.open``. Ultralytics (imported by in-process workers) replaces
    it with a version that tries to pip-install a HEIF plugin when a file is not an
    image; validation must never reach for the network."""
    patches = sys.modules.get("ultralytics.utils.patches")
    opener = getattr(patches, "_image_open", PILImage.open)
    image: PILImage.Image = opener(path)
    return image


class RejectedImage(Exception):
    """Why a file is not accepted; ``kind`` picks the HTTP status when all files fail."""

    def __init__(self, reason: str, kind: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # "invalid" | "unsupported" | "too_large"


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def inspect(
    path: Path,
    *,
    max_pixels: int,
    thumb_size: int,
    on_decoded: Callable[[PILImage.Image], None] | None = None,
) -> ImageInfo:
    """Opens, fully decodes and measures an image; ``on_decoded`` sees the decoded image
    (used to write the thumbnail without decoding twice).

    Raises RejectedImage for anything that is not a complete image of an allowed
    format within the pixel budget.
    """
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; make it an error.
        warnings.simplefilter("error", PILImage.DecompressionBombWarning)
        try:
            with _open(path) as img:
                pil_format = img.format or ""
                if pil_format not in ALLOWED_FORMATS:
                    raise RejectedImage(
                        f"unsupported image format {pil_format or 'unknown'}; allowed: "
                        "JPEG, PNG, WebP, BMP, TIFF",
                        "unsupported",
                    )
                width, height = img.size
                if width <= 0 or height <= 0:
                    raise RejectedImage("image has no pixels")
                if width * height > max_pixels:
                    raise RejectedImage(
                        f"image is {width}x{height} = {width * height} pixels, over the "
                        f"limit of {max_pixels}",
                        "too_large",
                    )
                if pil_format == "JPEG":
                    # Decode at reduced scale: every byte is still read and checked, at a
                    # fraction of the memory and time.
                    img.draft("RGB", (thumb_size, thumb_size))
                img.load()
                if on_decoded is not None:
                    on_decoded(img)
        except RejectedImage:
            raise
        except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
            raise RejectedImage(f"image exceeds the pixel limit ({exc})", "too_large") from exc
        except UnidentifiedImageError as exc:
            raise RejectedImage(
                "not a recognised image (allowed: JPEG, PNG, WebP, BMP, TIFF)", "unsupported"
            ) from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise RejectedImage(f"corrupt or truncated image: {exc}") from exc
    short, _ = ALLOWED_FORMATS[pil_format]
    return ImageInfo(format=short, width=width, height=height)


def write_thumbnail(storage: Storage, img: PILImage.Image, target: Path, size: int) -> None:
    """Renders a JPEG thumbnail of a decoded image, written atomically; once per blob."""
    if target.exists():
        return
    thumb = ImageOps.exif_transpose(img.copy())
    thumb.thumbnail((size, size))
    if thumb.mode not in ("RGB", "L"):
        thumb = thumb.convert("RGB")
    with storage.atomic_writer(target) as fh:
        thumb.save(fh, format="JPEG", quality=85)


def render_thumbnail(storage: Storage, blob: Path, target: Path, size: int) -> None:
    """Regenerates a missing thumbnail from its stored original."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PILImage.DecompressionBombWarning)
        with _open(blob) as img:
            if img.format == "JPEG":
                img.draft("RGB", (size, size))
            img.load()
            write_thumbnail(storage, img, target, size)
