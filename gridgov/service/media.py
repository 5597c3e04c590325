"""Evidence photos: the rules between an upload and the photos of an incident's events.

Every front end (the native media route, the field page's report and actions with photos,
Open311's multipart filing) calls this module; none holds a rule of its own:

- **what a photo is**: JPEG, PNG or WebP by its content (:func:`gridgov.photos.examine`); at
  most ``settings.media_max_per_event`` photos an event;
- **which event it documents**: a ``report`` photo the report, a ``resolve`` photo the latest
  resolve, a ``verify`` photo the latest verify or reopen (the verification visit);
- **where it lives**: under ``settings.media_root``, one directory per incident, the clean copy
  (no EXIF) and its thumbnail named by the SHA-256 of the uploaded bytes, written before the
  row that points at them so a row never names a missing file;
- **removal**: the row stays, saying who removed it, when and why, and the files go.

Who may see a photo is the incident's scope: the routes check the incident is visible to the
caller before they call here.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gridgov.errors import GridgovError, InputError, NotFoundError
from gridgov.photos import EXTENSIONS, Photo, examine
from gridgov.settings import Settings
from gridgov.store import Engine
from gridgov.store.media_rows import (
    add_media,
    public_media,
    read_media,
    read_media_item,
    record_removal,
    sha_in_use,
)
from gridgov.store.models import MEDIA_KINDS
from gridgov.workflow import Action

__all__ = [
    "KIND_OF_ACTION",
    "MEDIA_KINDS",
    "StoredFile",
    "attach",
    "check_photos",
    "media_file",
    "photos_of",
    "public_file",
    "public_photos",
    "remove",
]

#: The events each kind of photo documents (a reopen is the verification visit's outcome).
_ACTIONS = {
    "report": (str(Action.REPORT),),
    "resolve": (str(Action.RESOLVE),),
    "verify": (str(Action.VERIFY), str(Action.REOPEN)),
}
#: The kind of photo a workflow action carries, for the actions that take one.
KIND_OF_ACTION = {
    str(Action.RESOLVE): "resolve",
    str(Action.VERIFY): "verify",
    str(Action.REOPEN): "verify",
}
_CONTENT_TYPES = {ext: f"image/{'jpeg' if ext == 'jpg' else ext}" for ext in EXTENSIONS.values()}


@dataclass(frozen=True)
class StoredFile:
    """A photo file to serve."""

    path: Path
    content_type: str


def check_photos(uploads: Sequence[tuple[str, bytes]], settings: Settings) -> list[Photo]:
    """Examine every upload (``(file name, bytes)``) before anything is stored.

    Raises
    ------
    UnsupportedMediaError
        One is not a JPEG, PNG or WebP photo (by its content).
    InputError
        More photos than one event may carry.
    """
    if len(uploads) > settings.media_max_per_event:
        msg = f"at most {settings.media_max_per_event} photos an event, got {len(uploads)}"
        raise InputError(msg)
    tz = ZoneInfo(settings.display_tz)
    return [examine(data, local_tz=tz, name=name or "photo") for name, data in uploads]


def _incident_dir(settings: Settings, incident_id: str) -> Path:
    # Named by a digest, not the id itself: a client's id such as ".." must not name a path.
    digest = hashlib.sha256(incident_id.encode()).hexdigest()[:32]
    return Path(settings.media_root) / digest


def _write(path: Path, data: bytes) -> None:
    """Write a file whole or not at all (a reader never sees half a photo)."""
    if path.exists():
        return  # content-addressed: the same name holds the same bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _names(sha256: str, content_type: str) -> tuple[str, str]:
    ext = {v: k for k, v in _CONTENT_TYPES.items()}[content_type]
    return f"{sha256}.{ext}", f"{sha256}.thumb.jpg"


def attach(
    engine: Engine,
    settings: Settings,
    incident_id: str,
    kind: str,
    photos: Sequence[Photo],
    *,
    actor: str,
    public: bool = False,
    event_seq: int | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Store checked photos of one event of an incident (see the module's rules).

    ``event_seq`` names the event when the caller just recorded it; otherwise the incident's
    latest event of ``kind``. A retry of the same photo for the same event stores nothing new.

    Raises
    ------
    InputError
        An unknown kind, or more photos than one event may hold.
    NotFoundError
        The incident has no event of that kind yet.
    """
    if kind not in MEDIA_KINDS:
        msg = f"kind must be one of {', '.join(MEDIA_KINDS)}, got {kind!r}"
        raise InputError(msg)
    if not photos:
        return []
    folder = _incident_dir(settings, incident_id)
    for photo in photos:
        clean, thumb = _names(photo.sha256, photo.content_type)
        _write(folder / clean, photo.clean)
        _write(folder / thumb, photo.thumbnail)
    at = now or datetime.now(UTC)
    rows = [
        {
            "kind": kind,
            "sha256": p.sha256,
            "content_type": p.content_type,
            "size_bytes": p.size_bytes,
            "width": p.width,
            "height": p.height,
            "taken_at": p.taken_at,
            "gps_lon": None if p.gps is None else p.gps[0],
            "gps_lat": None if p.gps is None else p.gps[1],
            "public": public,
            "uploaded_at": at,
            "uploaded_by": actor,
        }
        for p in photos
    ]
    try:
        return add_media(
            engine,
            incident_id,
            _ACTIONS[kind],
            rows,
            max_per_event=settings.media_max_per_event,
            event_seq=event_seq,
        )
    except GridgovError:
        # Refused (too many, removed before, no such event): no file may stay behind
        # that no kept row names (a removed photo must not come back to the disk).
        _drop_unused(engine, folder, incident_id, photos)
        raise


def _drop_unused(engine: Engine, folder: Path, incident_id: str, photos: Sequence[Photo]) -> None:
    for photo in photos:
        if not sha_in_use(engine, incident_id, photo.sha256):
            for name in _names(photo.sha256, photo.content_type):
                (folder / name).unlink(missing_ok=True)


def photos_of(engine: Engine, incident_id: str) -> list[dict[str, Any]]:
    """The incident's photos in the order of its events, removed ones with their removal."""
    return read_media(engine, incident_id)


def media_file(
    engine: Engine, settings: Settings, incident_id: str, media_id: int, *, thumbnail: bool
) -> StoredFile:
    """The clean copy (or thumbnail) of a photo that is not removed.

    Raises
    ------
    NotFoundError
        No such photo, removed, or its file is gone.
    """
    item = read_media_item(engine, incident_id, media_id)
    if item["removed_at"] is not None:
        msg = f"photo {media_id} of incident {incident_id} was removed"
        raise NotFoundError(msg)
    clean, thumb = _names(item["sha256"], item["content_type"])
    path = _incident_dir(settings, incident_id) / (thumb if thumbnail else clean)
    if not path.is_file():
        msg = f"photo {media_id} of incident {incident_id} has no file"
        raise NotFoundError(msg)
    return StoredFile(path, "image/jpeg" if thumbnail else item["content_type"])


def remove(
    engine: Engine,
    settings: Settings,
    incident_id: str,
    media_id: int,
    *,
    actor: str,
    reason: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Remove a photo (privacy rules): the row records who, when and why; the files go
    unless another photo of the incident that is kept has the same bytes.

    Raises
    ------
    InputError
        No reason given.
    NotFoundError
        No such photo.
    """
    if not reason or not reason.strip():
        raise InputError("a reason is required to remove a photo")
    item = record_removal(
        engine,
        incident_id,
        media_id,
        at=now or datetime.now(UTC),
        by=actor,
        reason=reason.strip(),
    )
    if not sha_in_use(engine, incident_id, item["sha256"]):
        folder = _incident_dir(settings, incident_id)
        for name in _names(item["sha256"], item["content_type"]):
            (folder / name).unlink(missing_ok=True)
    return item


def public_photos(engine: Engine, incident_ids: Sequence[str]) -> dict[str, int]:
    """Per incident, the id of the photo its reporter agreed to publish (if any)."""
    return {k: int(v["media_id"]) for k, v in public_media(engine, incident_ids).items()}


def public_file(engine: Engine, settings: Settings, incident_id: str, media_id: int) -> StoredFile:
    """The clean copy of a photo its reporter agreed to publish (NotFoundError otherwise)."""
    if public_photos(engine, [incident_id]).get(incident_id) != media_id:
        msg = f"no public photo {media_id} of request {incident_id}"
        raise NotFoundError(msg)
    return media_file(engine, settings, incident_id, media_id, thumbnail=False)
