"""Evidence photos as bytes: the format from the content, EXIF read, a clean copy and a thumbnail.

Pure: bytes in, a :class:`Photo` out (Pillow decodes; nothing touches a disk or a database).
The format is judged by the file's first bytes and then by decoding it, never by its name or
the type a client claims, so an HTML page named ``photo.jpg`` is refused. The copy made for
others to see is re-encoded without EXIF (no GPS, no camera serial), upright as the camera
meant it; what the EXIF said (when and where it was taken) is returned beside it for the
database.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from datetime import datetime, tzinfo

from PIL import Image, ImageOps, UnidentifiedImageError

from gridgov.errors import UnsupportedMediaError

__all__ = ["CONTENT_TYPES", "THUMBNAIL_PX", "Photo", "examine", "sniff"]

#: Pillow format → the content type a photo of it is served with.
CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
#: File extensions of the stored copies.
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
#: The longer side of a thumbnail (px).
THUMBNAIL_PX = 320
#: Photos larger than this are refused before decoding (a small file can decode to gigabytes).
MAX_PIXELS = 50_000_000
_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_DATETIME = 0x0132
_DATETIME_ORIGINAL = 0x9003
_OFFSET_TIME_ORIGINAL = 0x9011


@dataclass(frozen=True)
class Photo:
    """One photo examined: what it is, what its EXIF said, and the copies to store.

    ``sha256`` and ``size_bytes`` are of the bytes as uploaded; ``clean`` is the copy without
    EXIF (same format), ``thumbnail`` a JPEG of at most :data:`THUMBNAIL_PX` a side.
    """

    format: str
    sha256: str
    size_bytes: int
    width: int
    height: int
    taken_at: datetime | None
    gps: tuple[float, float] | None  # (lon, lat), WGS84 as GPS receivers give it
    clean: bytes
    thumbnail: bytes

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]


def sniff(head: bytes) -> str | None:
    """The photo format the first bytes announce (``JPEG``, ``PNG``, ``WEBP``), else None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def examine(data: bytes, *, local_tz: tzinfo, name: str = "photo") -> Photo:
    """Check one upload and make its clean copy and thumbnail.

    ``local_tz`` reads an EXIF time that carries no offset (cameras write local time).

    Raises
    ------
    UnsupportedMediaError
        Not a JPEG, PNG or WebP by its content, undecodable, or too many pixels.
    """
    fmt = sniff(data[:16])
    if fmt is None:
        msg = f"{name}: not a JPEG, PNG or WebP photo (judged by its content, not its name)"
        raise UnsupportedMediaError(msg)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[fmt])
            if image.width * image.height > MAX_PIXELS:
                msg = f"{name}: {image.width}×{image.height} pixels is more than a photo needs"
                raise UnsupportedMediaError(msg)
            image.load()
    except UnsupportedMediaError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Warning) as exc:
        msg = f"{name}: the {fmt} photo cannot be decoded ({exc})"
        raise UnsupportedMediaError(msg) from None
    exif = image.getexif()
    taken_at = _taken_at(exif, local_tz)
    gps = _gps(exif)
    upright = ImageOps.exif_transpose(image)
    return Photo(
        format=fmt,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        width=upright.width,
        height=upright.height,
        taken_at=taken_at,
        gps=gps,
        clean=_encode(upright, fmt),
        thumbnail=_thumbnail(upright),
    )


def _encode(image: Image.Image, fmt: str) -> bytes:
    """The image re-encoded with no metadata at all (Pillow writes EXIF only when given)."""
    out = io.BytesIO()
    if fmt == "JPEG":
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image.save(out, "JPEG", quality=90)
    elif fmt == "PNG":
        image.save(out, "PNG")
    else:
        image.save(out, "WEBP", quality=90)
    return out.getvalue()


def _thumbnail(image: Image.Image) -> bytes:
    small = image.convert("RGB")
    small.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    out = io.BytesIO()
    small.save(out, "JPEG", quality=80)
    return out.getvalue()


def _taken_at(exif: Image.Exif, local_tz: tzinfo) -> datetime | None:
    sub = exif.get_ifd(_EXIF_IFD)
    raw = sub.get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
    if not isinstance(raw, str):
        return None
    try:
        when = datetime.strptime(raw.strip("\x00 "), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    offset = sub.get(_OFFSET_TIME_ORIGINAL)
    if isinstance(offset, str):
        try:
            return datetime.fromisoformat(f"{when.isoformat()}{offset.strip()}")
        except ValueError:
            pass
    return when.replace(tzinfo=local_tz)


def _degrees(value: object) -> float | None:
    try:
        d, m, s = (float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return d + m / 60 + s / 3600


def _gps(exif: Image.Exif) -> tuple[float, float] | None:
    gps = exif.get_ifd(_GPS_IFD)
    lat = _degrees(gps.get(2))
    lon = _degrees(gps.get(4))
    if lat is None or lon is None:
        return None
    if gps.get(1) == "S":
        lat = -lat
    if gps.get(3) == "W":
        lon = -lon
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return lon, lat
