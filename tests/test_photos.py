"""Photos as bytes (gridgov.photos): formats judged by content, EXIF read and dropped."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone

import pytest
from PIL import Image

from gridgov.errors import UnsupportedMediaError
from gridgov.photos import THUMBNAIL_PX, examine, sniff

BEIJING = timezone(timedelta(hours=8))


def encoded(fmt: str, size: tuple[int, int] = (400, 300), **save: object) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, fmt, **save)
    return out.getvalue()


@pytest.mark.parametrize(("fmt", "content_type"), [("PNG", "image/png"), ("WEBP", "image/webp")])
def test_png_and_webp_are_photos_too(fmt: str, content_type: str) -> None:
    photo = examine(encoded(fmt), local_tz=BEIJING)
    assert photo.content_type == content_type
    assert (photo.width, photo.height) == (400, 300)
    assert photo.taken_at is None and photo.gps is None
    assert Image.open(io.BytesIO(photo.clean)).format == fmt
    assert Image.open(io.BytesIO(photo.thumbnail)).format == "JPEG"


@pytest.mark.parametrize(
    "data",
    [
        b"<!doctype html><title>x</title>",
        b"GIF89a" + b"\x00" * 40,
        b"%PDF-1.7\n",
        b"",
    ],
    ids=["html", "gif", "pdf", "empty"],
)
def test_other_content_is_refused_whatever_its_name(data: bytes) -> None:
    assert sniff(data[:16]) is None
    with pytest.raises(UnsupportedMediaError, match="judged by its content"):
        examine(data, local_tz=BEIJING, name="photo.jpg")


def test_a_jpeg_header_on_garbage_is_refused() -> None:
    with pytest.raises(UnsupportedMediaError, match="cannot be decoded"):
        examine(b"\xff\xd8\xff\xe0" + b"\x00" * 500, local_tz=BEIJING)


def test_exif_is_read_then_dropped_and_the_photo_stood_upright() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° to display
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = "2026:11:30 18:05:00"
    sub[0x9011] = "+08:00"
    exif.get_ifd(0x8825).update({1: "S", 2: (33.0, 52.0, 0.0), 3: "W", 4: (151.0, 12.0, 0.0)})
    photo = examine(encoded("JPEG", (800, 200), exif=exif), local_tz=UTC)
    assert (photo.width, photo.height) == (200, 800)
    assert photo.taken_at == datetime(2026, 11, 30, 10, 5, tzinfo=UTC)
    assert photo.gps == pytest.approx((-151.2, -33.866667))
    clean = Image.open(io.BytesIO(photo.clean))
    assert clean.size == (200, 800) and len(clean.getexif()) == 0
    assert max(Image.open(io.BytesIO(photo.thumbnail)).size) == THUMBNAIL_PX


def test_an_exif_time_without_offset_is_local_time() -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2026:11:30 18:05:00"
    photo = examine(encoded("JPEG", exif=exif), local_tz=BEIJING)
    assert photo.taken_at == datetime(2026, 11, 30, 18, 5, tzinfo=BEIJING)
