"""The asset store: ids, image files and their metadata, and the saved jobs; the only code touching the data folder."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image

from inpaint import png
from inpaint.errors import NotFoundError, RequestError
from inpaint.imageops import sniff_format

log = logging.getLogger(__name__)

ASSET_ID_PATTERN = re.compile(r"asset_[A-Za-z0-9_-]{22}")
JOB_ID_PATTERN = re.compile(r"job_[A-Za-z0-9_-]{22}")
KINDS = ("image", "mask", "result", "preview")
WEBP_QUALITY = 90  # visually lossless for photos at a fraction of the PNG's size
# Encoder effort 0 of 0..6 (Pillow's default is 4): 2.5-3x faster, within 0.2 dB PSNR, files -2..+13%.
# A rendition is made while a client waits for it: at 2048x2048 the default effort would double that wait.
WEBP_METHOD = 0
# PNGs are written by inpaint.png (every core; L, RGB and RGBA), other modes by Pillow at zlib level 1 of 0..9
# (Pillow's default is 6): a photo-like 2048x2048 result encodes in 0.27x the time for 16% more bytes
# (bench/png_levels.py); level 0 stores it raw, twice the bytes.
PNG_LEVEL = 1
# The types an original may have, and the extension its file keeps. The WebP rendition is <id>.webp, so a
# WebP original is its own rendition.
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
# Another process sharing the folder may be mid-write; a put takes seconds, so older leftovers are a crash's.
STALE_AFTER_S = 600
ACTIVE_STATES = ("queued", "in-progress")  # a job in these may still add assets: none of it is deleted
DAY_S = 24 * 60 * 60

_SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    seq INTEGER PRIMARY KEY,  -- insertion order, stable across VACUUM (a bare rowid is not)
    id TEXT UNIQUE NOT NULL, kind TEXT NOT NULL, mime_type TEXT NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL, hidden INTEGER NOT NULL,
    parent_id TEXT REFERENCES assets(id), job_id TEXT, seed INTEGER, model_id TEXT, created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS assets_job ON assets(job_id);
-- Children by parent: deletes ask, and SQLite's own foreign-key check on each deleted row would scan otherwise.
CREATE INDEX IF NOT EXISTS assets_parent ON assets(parent_id);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, created_at TEXT, updated_at TEXT, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
-- Which jobs took an asset as input, without reading every job's JSON: deletes and retention ask.
CREATE INDEX IF NOT EXISTS jobs_input_image ON jobs(json_extract(json, '$.metadata.input.image'));
CREATE INDEX IF NOT EXISTS jobs_input_mask ON jobs(json_extract(json, '$.metadata.input.maskId'));
"""
# The Asset fields in order, so a row maps to Asset(*row) and astuple(asset) to a row.
_COLUMNS = "id, kind, mime_type, width, height, hidden, parent_id, job_id, seed, model_id, created_at"
# The saved jobs naming assets, both by index. A job names its inputs in metadata.input (the expressions
# are the indexes' own, so SQLite uses them); its results and previews (assetIds, intermediateImages) are the
# assets whose job_id is its id: a running job's previews reach its row only at the end, the column at once.
_INPUT_OF = ("SELECT id, json_extract(json, '$.metadata.input.{key}') FROM jobs "
             "WHERE json_extract(json, '$.metadata.input.{key}') IN (SELECT value FROM json_each(:ids))")
_OWNER_OF = ("SELECT jobs.id, assets.id FROM assets JOIN jobs ON jobs.id = assets.job_id "
             "WHERE assets.id IN (SELECT value FROM json_each(:ids))")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(16)}"


def utc_now() -> str:
    return utc_iso(time.time())


def utc_iso(seconds: float) -> str:
    """The one timestamp format of rows and jobs; fixed width, so comparing the strings compares the times."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_id(value: object, pattern: re.Pattern, field: str, example: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise RequestError(field, f"{shown} must be {example}<22 chars>")
    return value


def check_asset_id(value: object, field: str = "assetId") -> str:
    return _check_id(value, ASSET_ID_PATTERN, field, "an asset id like asset_")


def check_job_id(value: object, field: str = "jobId") -> str:
    return _check_id(value, JOB_ID_PATTERN, field, "a job id like job_")


@dataclass(frozen=True)
class Asset:
    id: str
    kind: str
    mime_type: str
    width: int
    height: int
    hidden: bool
    parent_id: str | None
    job_id: str | None
    seed: int | None
    model_id: str | None
    created_at: str


def _asset(row: tuple) -> Asset:
    return Asset(*row[:5], bool(row[5]), *row[6:])


def _encode(image: Image.Image, fmt: str, icc_profile: bytes | None = None) -> bytes:
    if fmt == "PNG" and png.encodable(image):
        return png.encode(image, icc_profile=icc_profile)
    # Passed even when None: Pillow's PNG encoder would otherwise embed whatever profile `info` still holds.
    buffer = io.BytesIO()
    if fmt == "PNG":
        image.save(buffer, format="PNG", compress_level=PNG_LEVEL, icc_profile=icc_profile)
    else:
        has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        # WebP knows only RGB(A).
        image.convert("RGBA" if has_alpha else "RGB").save(buffer, format="WEBP", quality=WEBP_QUALITY,
                                                           method=WEBP_METHOD, icc_profile=icc_profile)
    return buffer.getvalue()


def _mime_of(data: bytes) -> str:
    """The type of a file by its first bytes; only the types an original may have."""
    fmt = sniff_format(data)
    if fmt is None:
        raise ValueError(f"a stored file must be PNG, JPEG or WebP; it starts with {data[:12]!r}")
    return f"image/{fmt.lower()}"


def _profile_for(image: Image.Image, icc_profile: bytes | None) -> bytes | None:
    """The ICC profile to embed: the one given, else the image's own when it describes the image's pixels."""
    spaces = {"RGB": b"RGB ", "RGBA": b"RGB ", "P": b"RGB ", "L": b"GRAY", "LA": b"GRAY"}
    if icc_profile is not None:
        if icc_profile[16:20] != spaces.get(image.mode):
            raise ValueError(f"icc_profile describes {icc_profile[16:20]!r} pixels; the image is {image.mode}")
        return icc_profile
    own = image.info.get("icc_profile")
    # A CMYK photo converted to RGB keeps its CMYK profile in `info`: tagging RGB pixels with it would lie.
    return own if own and own[16:20] == spaces.get(image.mode) else None


def _write_atomic(path: Path, data: bytes) -> None:
    # Same folder so os.replace is a rename; a reader sees the old state or the whole file, never a prefix.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    if os.name == "posix":  # makes the renames themselves durable; Windows cannot open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _json_ids(ids) -> str:
    """Ids as one JSON parameter, read back with json_each: any number of them, no SQL built from values."""
    return json.dumps(sorted(ids))


def _job_refs(db: sqlite3.Connection, ids, *, owner: bool = True) -> dict[str, set[str]]:
    """For each of `ids` that a saved job names, those jobs: as its input image or mask, and (with `owner`)
    as one of its results or previews."""
    refs: dict[str, set[str]] = {}
    parts = [_INPUT_OF.format(key="image"), _INPUT_OF.format(key="maskId"), *([_OWNER_OF] if owner else [])]
    for job_id, asset_id in db.execute(" UNION ALL ".join(parts), {"ids": _json_ids(ids)}):
        refs.setdefault(asset_id, set()).add(job_id)
    return refs


def _still_parents(db: sqlite3.Connection, removable: set[str]) -> set[str]:
    """Those of `removable` that must stay because an asset staying names them as parent: a kept child keeps
    its parent, and that parent its own, so this repeats until nothing changes."""
    links = db.execute("SELECT id, parent_id FROM assets WHERE parent_id IN (SELECT value FROM json_each(?))",
                       (_json_ids(removable),)).fetchall()
    removable, kept = set(removable), set()
    while newly := {parent for child, parent in links if parent in removable and child not in removable}:
        removable -= newly
        kept |= newly
    return kept


def _some(ids, limit: int = 5) -> str:
    ids = sorted(ids)
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


class AssetStore:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        (self.root / "files").mkdir(parents=True, exist_ok=True)
        self._files = (self.root / "files").resolve()
        # One maker per missing rendition: concurrent first requests wait for it instead of encoding it again.
        self._making_lock = threading.Lock()
        self._making: dict[str, threading.Lock] = {}
        # One connection shared by the server's threads; the lock serialises its use since a
        # sqlite3 connection's cursor state is not safe across threads. Every call is short.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / "inpaint.db", check_same_thread=False,
                                   isolation_level=None, timeout=10)  # a second process may hold the write lock
        self._db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL-safe; a lost last row only orphans files, swept below
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self.sweep_stale_files()

    def sweep_stale_files(self, now: float | None = None) -> int:
        """Removes temp files and row-less originals/renditions that a crash mid-put (or between a delete's
        commit and its unlinks) left behind; returns how many. Run at open, and periodically by the job queue:
        a long-running server otherwise keeps a failed put's leftovers until its next restart."""
        with self._lock:
            known = {row[0] for row in self._db.execute("SELECT id FROM assets")}
        cutoff = (time.time() if now is None else now) - STALE_AFTER_S
        removed = 0
        for path in self._files.iterdir():
            orphan = path.suffix[1:] in EXTENSIONS.values() and path.stem not in known
            try:  # a put or a delete may rename or remove the file between the listing and here
                if (path.suffix == ".tmp" or orphan) and path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    @contextmanager
    def _transaction(self):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _path(self, asset_id: str, extension: str) -> Path:
        path = (self._files / f"{check_asset_id(asset_id)}.{extension}").resolve()
        # The id pattern already rules out separators; this also catches a file swapped for a symlink.
        if not path.is_relative_to(self._files):
            raise RequestError("assetId", f"{asset_id} resolves outside the asset folder")
        return path

    def encode(self, image: Image.Image, *, icc_profile: bytes | None = None) -> bytes:
        """The PNG file `put` stores for `image` (with `icc_profile`, as put takes it), for a caller with other
        work to do between the encode and the write: `put(image, ..., data=...)` then stores it as it is."""
        return _encode(image, "PNG", _profile_for(image, icc_profile))

    def put(self, image: Image.Image, *, kind: str = "image", hidden: bool = False, parent_id: str | None = None,
            job_id: str | None = None, seed: int | None = None, model_id: str | None = None,
            icc_profile: bytes | None = None, data: bytes | None = None) -> Asset:
        """Store an image as a lossless PNG; `icc_profile` (default: the image's own, if it fits its mode) is
        embedded in it and in the WebP rendition made from it. `data`, when given, is the PNG, JPEG or WebP file
        `image` was decoded from, stored as it is, profile included: the caller vouches that it decodes to
        exactly `image`'s pixels."""
        # 1. Check everything before a byte is written, so a rejected put leaves nothing behind.
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r} must be one of {KINDS}")
        mime_type = "image/png" if data is None else _mime_of(data)
        icc_profile = _profile_for(image, icc_profile)
        if parent_id is not None:
            self.get(parent_id, field="parentId")
        if job_id is not None:
            check_job_id(job_id)
        asset = Asset(new_id("asset"), kind, mime_type, image.width, image.height, bool(hidden),
                      parent_id, job_id, None if seed is None else int(seed), model_id, utc_now())
        # 2. The file first, the row last: a row always points at a complete file. The WebP rendition waits
        #    for its first request (rendition()): most results are fetched once, as the original or as WebP.
        paths = [self._path(asset.id, EXTENSIONS[mime_type])]
        try:
            _write_atomic(paths[0], self.encode(image, icc_profile=icc_profile) if data is None else data)
            _fsync_dir(self._files)
            with self._transaction() as db:
                try:
                    db.execute(f"INSERT INTO assets ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", astuple(asset))
                except sqlite3.IntegrityError:  # the parent was deleted since it was checked above
                    raise NotFoundError("parentId", f"no asset {parent_id}") from None
        except BaseException:
            for path in paths:
                path.unlink(missing_ok=True)
            raise
        return asset

    def get(self, asset_id: str, *, field: str = "assetId") -> Asset:
        rows = self._query(f"SELECT {_COLUMNS} FROM assets WHERE id = ?", (check_asset_id(asset_id, field),))
        if not rows:
            raise NotFoundError(field, f"no asset {asset_id}")
        return _asset(rows[0])

    def exists(self, asset_id: str) -> bool:
        if not isinstance(asset_id, str) or not ASSET_ID_PATTERN.fullmatch(asset_id):
            return False
        return bool(self._query("SELECT 1 FROM assets WHERE id = ?", (asset_id,)))

    def open_image(self, asset_id: str, *, field: str = "assetId") -> Image.Image:
        asset = self.get(asset_id, field=field)
        with Image.open(self._path(asset_id, EXTENSIONS[asset.mime_type])) as image:
            return image.copy()  # fully decoded, file handle closed

    def file_path(self, asset_id: str, *, original: bool = True) -> Path:
        """The original file (of the asset's own mime type), or the WebP rendition, made if it is missing."""
        asset = self.get(asset_id)
        path = self._path(asset_id, EXTENSIONS[asset.mime_type]) if original else self.rendition(asset)
        if not path.is_file():
            raise NotFoundError("assetId", f"no asset {asset_id}")
        return path

    def rendition(self, asset: Asset) -> Path:
        """The WebP rendition's path, encoded from the original on the first call; a WebP original is its own."""
        path = self._path(asset.id, "webp")
        if asset.mime_type == "image/webp" or path.is_file():
            return path
        with self._making_lock:
            making = self._making.setdefault(asset.id, threading.Lock())
        try:
            with making:
                if not path.is_file():  # made while this one waited
                    with Image.open(self._path(asset.id, EXTENSIONS[asset.mime_type])) as image:
                        image.load()
                        # The original's own profile, which put embedded: the rendition shows the same colours.
                        webp = _encode(image, "WEBP", _profile_for(image, None))
                    # Atomic, so another process's request reads the whole file or makes its own; no directory
                    # fsync, as a rendition lost in a crash is made again. A delete racing this leaves a
                    # row-less file, which sweep_stale_files removes.
                    _write_atomic(path, webp)
        finally:
            with self._making_lock:
                self._making.pop(asset.id, None)
        return path

    def list(self, *, include_hidden: bool = False, limit: int = 100, offset: int = 0,
             job_id: str | None = None) -> list[Asset]:
        if not 1 <= limit <= 1000:
            raise RequestError("limit", f"{limit} must be between 1 and 1000")
        if offset < 0:
            raise RequestError("offset", f"{offset} must be 0 or more")
        where, params = [], []
        if not include_hidden:
            where.append("hidden = 0")
        if job_id is not None:
            where.append("job_id = ?")
            params.append(check_job_id(job_id))
        sql = f"SELECT {_COLUMNS} FROM assets {'WHERE ' + ' AND '.join(where) if where else ''}"
        return [_asset(row) for row in self._query(f"{sql} ORDER BY seq DESC LIMIT ? OFFSET ?",
                                                   (*params, limit, offset))]

    def save_job(self, job: dict) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO jobs (id, status, created_at, updated_at, json) VALUES (?,?,?,?,?) "
                       "ON CONFLICT(id) DO UPDATE SET status = excluded.status, "
                       "updated_at = excluded.updated_at, json = excluded.json",
                       (check_job_id(job.get("jobId")), job["status"], job.get("createdAt"),
                        job.get("updatedAt"), json.dumps(job)))

    def get_job(self, job_id: str) -> dict | None:
        rows = self._query("SELECT json FROM jobs WHERE id = ?", (check_job_id(job_id),))
        return json.loads(rows[0][0]) if rows else None

    def fail_interrupted_jobs(self, message: str) -> int:
        """Jobs a stopped process left queued or running become failures saying `message`. Their results and
        previews are read back from the assets: a kill can land after an asset's row and before the job's
        next save, and previews are not saved on the job one by one."""
        now = utc_now()
        with self._transaction() as db:
            rows = db.execute("SELECT id, json FROM jobs WHERE status IN ('queued', 'in-progress')").fetchall()
            for job_id, text in rows:
                job = json.loads(text)
                job.update(status="failure", updatedAt=now)
                meta = job.setdefault("metadata", {})
                meta["error"] = message
                results, previews = meta.setdefault("assetIds", []), meta.setdefault("intermediateImages", [])
                for asset_id, kind, seed in db.execute("SELECT id, kind, seed FROM assets WHERE job_id = ? ORDER BY seq",
                                                       (job_id,)).fetchall():
                    if kind == "result" and asset_id not in results:
                        results.append(asset_id)
                        meta.setdefault("seeds", []).append(seed)
                    elif kind == "preview" and asset_id not in previews:
                        previews.append(asset_id)
                db.execute("UPDATE jobs SET status = ?, updated_at = ?, json = ? WHERE id = ?",
                           (job["status"], now, json.dumps(job), job_id))
        return len(rows)

    def delete_asset(self, asset_id: str) -> Asset:
        """Deletes one asset, its row and then its files, and returns it. Refused (409) while anything
        names it: an asset as its parent, or a saved job as input, result or preview. An asset made by a job
        that is still saved counts as named by it, so a running job's previews are covered too."""
        check_asset_id(asset_id)
        with self._transaction() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM assets WHERE id = ?", (asset_id,)).fetchone()
            if row is None:
                raise NotFoundError("assetId", f"no asset {asset_id}")
            asset = _asset(row)
            children = [child for (child,) in db.execute("SELECT id FROM assets WHERE parent_id = ?", (asset_id,))]
            jobs = _job_refs(db, [asset_id]).get(asset_id, set())
            if children or jobs:
                uses = [f"assets name it as parent ({_some(children)})"] if children else []
                if jobs:
                    uses.append(f"saved jobs name it ({_some(jobs)})")
                raise RequestError("assetId", f"{asset_id} is still in use: {'; '.join(uses)}; delete those first",
                                   status=409)
            db.execute("DELETE FROM assets WHERE id = ?", (asset_id,))
        self._unlink([asset_id])
        return asset

    def delete_job(self, job_id: str) -> dict:
        """Deletes a finished job's row and the assets that were its alone: its results, previews and mask, and
        its input image. Any of them that another saved job names, or that an asset staying names as parent,
        stays (with its parent chain). Refused (409) while the job is queued or running.
        Returns {"jobId", "deletedAssetIds", "keptAssetIds"}, the ids in the order they were made."""
        check_job_id(job_id)
        with self._transaction() as db:
            row = db.execute("SELECT status, json FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFoundError("jobId", f"no job {job_id}")
            if row[0] in ACTIVE_STATES:
                raise RequestError("jobId", f"{job_id} is {row[0]}: cancel it first", status=409)
            meta = json.loads(row[1]).get("metadata") or {}
            named = [(meta.get("input") or {}).get("image"), (meta.get("input") or {}).get("maskId"),
                     *(meta.get("assetIds") or []), *(meta.get("intermediateImages") or [])]
            owned = [asset for (asset,) in db.execute(
                "SELECT id FROM assets WHERE job_id = ? OR id IN (SELECT value FROM json_each(?)) ORDER BY seq",
                (job_id, _json_ids(i for i in named if isinstance(i, str))))]
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))  # first, so its own references do not count
            removable = set(owned) - _job_refs(db, owned).keys()
            removable -= _still_parents(db, removable)
            db.execute("DELETE FROM assets WHERE id IN (SELECT value FROM json_each(?))", (_json_ids(removable),))
        deleted = [asset for asset in owned if asset in removable]
        self._unlink(deleted)
        return {"jobId": job_id, "deletedAssetIds": deleted,
                "keptAssetIds": [asset for asset in owned if asset not in removable]}

    def sweep_retention(self, days: int, now: float | None = None) -> int:
        """Deletes what nobody keeps once older than `days`: previews (dropped from their finished jobs'
        intermediateImages), and input images and masks that no saved job and no asset names. Results stay
        until deleted on purpose. Returns how many assets were deleted."""
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650:
            raise ValueError(f"days {days!r} must be an integer between 1 and 3650")
        cutoff = utc_iso((time.time() if now is None else now) - days * DAY_S)
        with self._transaction() as db:
            active = {job for (job,) in db.execute("SELECT id FROM jobs WHERE status IN (?, ?)", ACTIVE_STATES)}
            previews = {asset: job for asset, job in db.execute(
                "SELECT id, job_id FROM assets WHERE kind = 'preview' AND created_at < ?", (cutoff,))
                if job not in active}
            for asset in _job_refs(db, previews, owner=False):  # a preview taken as a job's input is an input now
                del previews[asset]
            inputs = {asset for (asset,) in db.execute(
                "SELECT id FROM assets WHERE kind IN ('image', 'mask') AND created_at < ?", (cutoff,))}
            inputs -= _job_refs(db, inputs).keys()
            removable = set(previews) | inputs
            removable -= _still_parents(db, removable)
            for job_id in {previews[asset] for asset in removable & previews.keys()} - {None}:
                row = db.execute("SELECT json FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is None:  # the job was deleted while an asset named this preview as its parent
                    continue
                job = json.loads(row[0])
                meta = job["metadata"]
                meta["intermediateImages"] = [i for i in meta.get("intermediateImages") or [] if i not in removable]
                db.execute("UPDATE jobs SET json = ? WHERE id = ?", (json.dumps(job), job_id))
            db.execute("DELETE FROM assets WHERE id IN (SELECT value FROM json_each(?))", (_json_ids(removable),))
        self._unlink(removable)
        return len(removable)

    def _unlink(self, asset_ids) -> None:
        """Removes deleted assets' files, after the rows' commit: a crash in between leaves only row-less files,
        which sweep_stale_files removes. The bare names, not _path: a file swapped for a symlink loses the link."""
        for asset_id in asset_ids:
            for suffix in sorted(set(EXTENSIONS.values())):
                try:
                    (self._files / f"{asset_id}.{suffix}").unlink(missing_ok=True)
                except OSError as exc:  # the rows are gone either way; the sweep retries the file
                    log.warning("could not remove %s.%s: %s", asset_id, suffix, exc)

    def integrity_ok(self) -> bool:
        return self._query("PRAGMA integrity_check") == [("ok",)]

    def close(self) -> None:
        with self._lock:
            self._db.close()
