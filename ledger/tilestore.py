"""Publishing a log as static objects: C2SP tlog-tiles paths in a directory or an S3 bucket.

The database stays the source of truth and the sequencer's only state; after each committed
batch the `Publisher` writes what the new tree needs to a `TileStore`, so every read a verifier,
witness, mirror or web page makes can be served as a static file behind any CDN:

    <prefix>/checkpoint                  the signed checkpoint     mutable, written LAST
    <prefix>/tile/<L>/<N>[.p/<W>]        hash tiles                immutable
    <prefix>/tile/entries/<N>[.p/<W>]    entry bundles             immutable, gzip where the
                                                                   store can say so

`<prefix>` is `logs/<name>`, the same paths the HTTP API serves, so a static server rooted at the
store answers exactly like `bledger serve` for these reads.

Order is the safety argument: objects are written before the checkpoint that needs them, and a
partial tile or bundle at width W never changes once written (a wider one gets a new path), so a
reader who sees checkpoint N can fetch every object of tree N. A crash anywhere leaves, at worst,
objects no checkpoint references yet; `Publisher.catch_up` (run at start and after a failed
upload) republishes from the last checkpoint the store holds, idempotently.

Stores:
* `dir:PATH` (or a bare path) — files; written to a temporary name and renamed, so a reader never
  sees half a file; the checkpoint's compare-and-replace holds an exclusive lock file.
* `s3://BUCKET[/PREFIX]?endpoint=URL` — any S3-compatible store through `boto3` (optional extra
  `[s3]`); credentials from the usual AWS environment variables or files.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from attest.checkpoint import Checkpoint, CheckpointError
from attest.tiles import (
    ENTRIES_LEVEL,
    TileId,
    decode_bundle,
    encode_bundle,
    tile_path,
    tiles_for_size,
)
from ledger.errors import LedgerError
from ledger.storage import Store

__all__ = [
    "CHECKPOINT_CACHE",
    "IMMUTABLE_CACHE",
    "DirTileStore",
    "Publisher",
    "S3TileStore",
    "TileStore",
    "TileStoreError",
    "open_tile_store",
]

_log = logging.getLogger(__name__)

IMMUTABLE_CACHE = "public, max-age=31536000, immutable"
"""Cache-Control of tiles and bundles: a path's bytes never change."""
CHECKPOINT_CACHE = "no-cache"
"""Cache-Control of the checkpoint, the one mutable object."""
OCTETS = "application/octet-stream"
TEXT = "text/plain; charset=utf-8"


class TileStoreError(LedgerError):
    """The tile store could not be read or written (down, slow, refused, misconfigured)."""


@dataclass(frozen=True)
class Stored:
    """An object as a store holds it."""

    data: bytes
    etag: str | None = None


class TileStore(Protocol):
    """Where published objects go. Keys are relative paths such as `logs/evidence/tile/0/000`."""

    url: str
    """How the operator named the store (for messages)."""

    def put(self, key: str, data: bytes, *, content_type: str, gzipped: bool = False) -> None:
        """Write an immutable object (`gzipped`: `data` may be sent compressed on the wire)."""
        ...

    def get(self, key: str) -> Stored | None:
        """The object at `key`, or None when there is none."""
        ...

    def replace_checkpoint(self, key: str, data: bytes, previous: Stored | None) -> bool:
        """Write the checkpoint unless someone changed it since `previous` was read.

        Returns False (and writes nothing) when the stored checkpoint is no longer `previous`:
        another frontend published meanwhile; the caller re-reads and decides again.
        """
        ...


# -- a directory ------------------------------------------------------------------------------


class DirTileStore:
    """Objects as files under `root` (serve it with any static web server)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"dir:{root}"
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        p = (self.root / key).resolve()
        if self.root.resolve() not in p.parents:
            raise TileStoreError(f"object key {key!r} leaves the store's directory")
        return p

    def put(self, key: str, data: bytes, *, content_type: str, gzipped: bool = False) -> None:
        """Write `key` atomically (temporary file, fsync, rename). Stored uncompressed: a static
        server compresses on the wire if configured to."""
        self._write(self._path(key), data)

    def get(self, key: str) -> Stored | None:
        """The file's bytes, or None."""
        try:
            return Stored(self._path(key).read_bytes())
        except FileNotFoundError:
            return None
        except OSError as e:
            raise TileStoreError(f"{self.url}: cannot read {key}: {e.strerror}") from e

    def replace_checkpoint(self, key: str, data: bytes, previous: Stored | None) -> bool:
        """Compare and replace under an exclusive lock on `<key>.lock`."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _flock(path.with_name(path.name + ".lock")):
            current = self.get(key)
            if (current and current.data) != (previous and previous.data):
                return False
            self._write(path, data)
            return True

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise TileStoreError(f"{self.url}: cannot write {path}: {e.strerror}") from e


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# -- an S3 bucket -----------------------------------------------------------------------------


class S3TileStore:
    """Objects in an S3-compatible bucket, through boto3 (imported only when used).

    Immutable objects carry `Cache-Control: public, max-age=31536000, immutable`; entry bundles
    are stored gzip-compressed with `Content-Encoding: gzip` (C2SP tlog-tiles: bundles SHOULD
    be compressed on the wire); the checkpoint carries `Cache-Control: no-cache` and is
    replaced with a conditional write (`If-Match` on the ETag read before, `If-None-Match: *`
    for the first one) so two frontends can never put an older checkpoint over a newer one.
    """

    def __init__(self, bucket: str, prefix: str = "", *, client: Any) -> None:
        self.bucket, self.prefix, self._s3 = bucket, prefix.strip("/"), client
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, *, content_type: str, gzipped: bool = False) -> None:
        """PUT an immutable object."""
        extra: dict[str, Any] = {"ContentType": content_type, "CacheControl": IMMUTABLE_CACHE}
        if gzipped:
            data = gzip.compress(data, mtime=0)
            extra["ContentEncoding"] = "gzip"
        self._call(
            "put",
            key,
            lambda: self._s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra),
        )

    def get(self, key: str) -> Stored | None:
        """GET an object (None when missing); gzip content is decompressed."""
        from botocore.exceptions import ClientError

        try:
            r = self._s3.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise TileStoreError(f"{self.url}: cannot read {key}: {e}") from e
        except Exception as e:  # connection refused, timeouts: botocore raises many kinds
            raise TileStoreError(f"{self.url}: cannot read {key}: {e}") from e
        body = r["Body"].read()
        if r.get("ContentEncoding") == "gzip":
            body = gzip.decompress(body)
        return Stored(body, r.get("ETag"))

    def replace_checkpoint(self, key: str, data: bytes, previous: Stored | None) -> bool:
        """Conditional PUT: If-Match the ETag read before, or If-None-Match * for the first."""
        from botocore.exceptions import ClientError

        cond: dict[str, str] = (
            {"IfNoneMatch": "*"}
            if previous is None or previous.etag is None
            else {"IfMatch": previous.etag}
        )
        try:
            self._s3.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                ContentType=TEXT,
                CacheControl=CHECKPOINT_CACHE,
                **cond,
            )
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            raise TileStoreError(f"{self.url}: cannot write {key}: {e}") from e
        except Exception as e:
            raise TileStoreError(f"{self.url}: cannot write {key}: {e}") from e
        return True

    def _call(self, what: str, key: str, fn: Any) -> None:
        try:
            fn()
        except Exception as e:
            raise TileStoreError(f"{self.url}: cannot {what} {key}: {e}") from e


def open_tile_store(spec: str) -> TileStore | None:
    """The store an operator names: `db` (None: the database serves tiles), `dir:PATH` or a
    path, or `s3://BUCKET[/PREFIX][?endpoint=URL&region=R]`."""
    if spec in ("", "db"):
        return None
    if spec.startswith("s3://"):
        u = urlsplit(spec)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        try:
            import boto3
            from botocore.config import Config
        except ImportError as e:
            raise TileStoreError(
                "an s3:// tile store needs boto3: pip install 'behaviour-ledger[s3]'"
            ) from e
        client = boto3.client(
            "s3",
            endpoint_url=q.get("endpoint"),
            region_name=q.get("region", "us-east-1"),
            config=Config(
                connect_timeout=5,
                read_timeout=30,
                retries={"max_attempts": 3, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )
        if not u.netloc:
            raise TileStoreError(f"tile store {spec!r} names no bucket")
        return S3TileStore(u.netloc, u.path, client=client)
    return DirTileStore(Path(spec.removeprefix("dir:")))


# -- publishing -------------------------------------------------------------------------------


class Publisher:
    """Publishes one log of `store` (the database) to a `TileStore`, under `logs/<name>/`."""

    def __init__(self, db: Store, log_id: int, name: str, origin: str, tiles: TileStore):
        self.db, self.log_id, self.origin, self.tiles = db, log_id, origin, tiles
        self.prefix = f"logs/{name}"
        self._lock = threading.Lock()
        # The largest size this process saw the store hold: a batch that is already covered
        # (a duplicate, or a size another frontend published) costs no request to the store.
        self._known = -1

    def published_size(self) -> tuple[int, Stored | None]:
        """The size of the checkpoint the store holds (0 when none), and that object."""
        cur = self.tiles.get(f"{self.prefix}/checkpoint")
        if cur is None:
            return 0, None
        try:
            body = cur.data.decode("utf-8").split("\n\n", 1)[0] + "\n"
            cp = Checkpoint.parse(body)
        except (UnicodeDecodeError, CheckpointError) as e:
            raise TileStoreError(f"{self.tiles.url}: stored checkpoint is malformed: {e}") from e
        if cp.origin != self.origin:
            raise TileStoreError(
                f"{self.tiles.url}: {self.prefix}/checkpoint is for {cp.origin!r}, "
                f"not {self.origin!r}"
            )
        return cp.size, cur

    def catch_up(self) -> int:
        """Publish the database's head if the store is behind it; returns the published size."""
        return self.publish(self.db.head(self.log_id).size)

    def publish(self, size: int) -> int:
        """Make the store hold a checkpoint of at least `size` (a committed tree size).

        Plan:
        1. read the store's checkpoint (size `old`); nothing to do when `old >= size`;
        2. write every tile and entry bundle that tree `size` has and tree `old` has not;
        3. replace the checkpoint (compare-and-swap); if another frontend published first,
           start again from (1) — its checkpoint may already cover `size`.
        Idempotent: a crash anywhere is repaired by calling it again.
        """
        with self._lock:
            if size <= self._known:
                return self._known
            while True:
                old, current = self.published_size()  # (1)
                if old >= size:
                    self._known = old
                    return old
                note = self.db.checkpoint(self.log_id, size)
                if note is None:
                    raise TileStoreError(f"the database holds no checkpoint of size {size}")
                self._objects(old, size)  # (2)
                # Crash point: objects written, checkpoint not: readers still see tree `old`,
                # whose objects are all there; the next publish writes these again, harmlessly.
                if self.tiles.replace_checkpoint(  # (3)
                    f"{self.prefix}/checkpoint", note.encode("utf-8"), current
                ):
                    self._known = size
                    return size

    def _objects(self, old: int, size: int) -> None:
        had = set(tiles_for_size(old))
        for tid, width in tiles_for_size(size):
            if (tid, width) in had:
                continue
            data = self.db.read_tile(self.log_id, tid)[: width * 32]
            if len(data) != width * 32:
                raise TileStoreError(f"the database lacks tile {tid.level}/{tid.index}@{width}")
            self.tiles.put(f"{self.prefix}/{tile_path(tid, width)}", data, content_type=OCTETS)
            if tid.level == 0:
                self._bundle(tid.index, width)

    def _bundle(self, index: int, width: int) -> None:
        entries = decode_bundle(self.db.read_bundle(self.log_id, index))[:width]
        if len(entries) != width:
            raise TileStoreError(f"the database lacks entries of bundle {index}@{width}")
        self.tiles.put(
            f"{self.prefix}/{tile_path(TileId(ENTRIES_LEVEL, index), width)}",
            encode_bundle(entries),
            content_type=OCTETS,
            gzipped=True,
        )
