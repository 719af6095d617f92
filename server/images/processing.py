"""Decides from the bytes, never the file name, whether a file is an image we accept."""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

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
# The extensions dataset tools find images by (ultralytics' loaders; not ".jpe"): what
# an import looks for in a zip, and the only ones an export keeps.
DATASET_SUFFIXES = frozenset(s for exts in EXTENSIONS.values() for s in exts) - {".jpe"}


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


def _open(path: Path | BinaryIO) -> PILImage.Image:
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

    def __reduce__(self) -> tuple[type[RejectedImage], tuple[str, str]]:
        # Decode workers return these to the API process; keep ``kind`` across pickling.
        return (RejectedImage, (self.reason, self.kind))


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


@contextlib.contextmanager
def _rejecting() -> Iterator[None]:
    """Turns whatever Pillow raises for a bad file into a RejectedImage."""
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; make it an error.
        warnings.simplefilter("error", PILImage.DecompressionBombWarning)
        try:
            yield
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


def thumbnail_fit(width: int, height: int, size: int) -> tuple[int, int]:
    """The size a thumbnail of a width x height image gets (fits a size x size square)."""
    ratio = min(size / width, size / height, 1.0)
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def inspect(
    path: Path | BinaryIO,
    *,
    max_pixels: int,
    thumb_size: int,
    on_decoded: Callable[[PILImage.Image], None] | None = None,
) -> ImageInfo:
    """Opens, fully decodes and measures an image; ``on_decoded`` sees the decoded image
    (used to write the thumbnail without decoding twice).

    Raises RejectedImage for anything that is not a complete image of an allowed
    format within the pixel budget. An error inside ``on_decoded`` is its own, not a
    verdict on the file.
    """
    with _rejecting():
        img = _open(path)
    try:
        with _rejecting():
            info = _decode(img, max_pixels, thumb_size if on_decoded else None)
        if on_decoded is not None:
            on_decoded(img)
    finally:
        img.close()
    return info


def _decode(img: PILImage.Image, max_pixels: int, thumb_size: int | None) -> ImageInfo:
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
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}",
            "too_large",
        )
    if pil_format == "JPEG":
        # DCT-scaled decode: libjpeg still entropy-decodes every coefficient of the
        # whole stream (so a truncated file still fails), but skips most of the inverse
        # DCT and colour work. Only as large as the thumbnail needs, or the smallest
        # scale (1/8) when no thumbnail is wanted.
        img.draft("RGB", thumbnail_fit(width, height, thumb_size) if thumb_size else (1, 1))
    img.load()
    short, _ = ALLOWED_FORMATS[pil_format]
    return ImageInfo(format=short, width=width, height=height)


def usable_thumbnail(target: Path) -> bool:
    """Thumbnails are written without an fsync (a derived cache): a crash can leave an
    empty file behind, which counts as missing."""
    try:
        return target.stat().st_size > 0
    except FileNotFoundError:
        return False


def save_thumbnail(img: PILImage.Image, fh: BinaryIO, size: int) -> None:
    """Renders a JPEG thumbnail of a decoded image into ``fh``."""
    thumb = ImageOps.exif_transpose(img)  # a copy: thumbnail() works in place
    # Bilinear is enough: thumbnail() first reduces by whole factors (as the DCT-scaled
    # decode of a JPEG already did), leaving at most 2x for the filter.
    thumb.thumbnail((size, size), PILImage.Resampling.BILINEAR)
    if thumb.mode not in ("RGB", "L"):
        thumb = thumb.convert("RGB")
    thumb.save(fh, format="JPEG", quality=85)


def write_thumbnail(storage: Storage, img: PILImage.Image, target: Path, size: int) -> None:
    """Renders a JPEG thumbnail of a decoded image, written atomically; once per blob."""
    if usable_thumbnail(target):
        return
    with storage.atomic_writer(target, durable=False) as fh:
        save_thumbnail(img, fh, size)


def render_thumbnail(storage: Storage, blob: Path, target: Path, size: int) -> None:
    """Regenerates a missing thumbnail from its stored original."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PILImage.DecompressionBombWarning)
        with _open(blob) as img:
            if img.format == "JPEG":
                img.draft("RGB", thumbnail_fit(img.width, img.height, size))
            img.load()
            write_thumbnail(storage, img, target, size)


# --- work done in child processes (server.images.decoding) ---------------------------


@dataclass(frozen=True)
class Check:
    """One received file for a decode worker to validate."""

    path: str
    max_pixels: int
    data: bytes | None = None


@dataclass(frozen=True)
class Checked:
    info: ImageInfo | None
    rejected: RejectedImage | None


def check_files(checks: list[Check]) -> list[Checked]:
    """Runs in a decode worker: one verdict per file, in order."""
    verdicts: list[Checked] = []
    for check in checks:
        try:
            # No thumbnail here (it needs a decode about 4x costlier, done after the
            # response), so JPEGs decode at the smallest DCT scale.
            source = Path(check.path) if check.data is None else io.BytesIO(check.data)
            info = inspect(source, max_pixels=check.max_pixels, thumb_size=1)
        except RejectedImage as exc:
            verdicts.append(Checked(None, exc))
        else:
            verdicts.append(Checked(info, None))
    return verdicts


def render_thumbnails(root: str, blobs: list[tuple[str, str]], size: int) -> None:
    """Runs in the thumbnail worker: renders each (blob, thumbnail) pair's thumbnail
    unless it exists. A blob deleted meanwhile, or a full disk, only means the
    thumbnail endpoint renders it when it is first asked for."""
    storage = Storage(Path(root))
    for blob, target in blobs:
        with contextlib.suppress(
            OSError,
            SyntaxError,
            ValueError,
            EOFError,
            PILImage.DecompressionBombError,
            PILImage.DecompressionBombWarning,
        ):
            if not usable_thumbnail(Path(target)):
                render_thumbnail(storage, Path(blob), Path(target), size)
