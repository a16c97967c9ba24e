"""Publishing to a tile store: a directory behind a real static web server, read by the SDK.

After every batch the published objects must let a reader who knows nothing but the static URL
recompute the signed root (`LedgerClient.audit` with `tiles_url`), at C2SP paths, and a crash
between the objects and the checkpoint must leave the store at the previous, complete tree.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from attest import merkle
from attest.keys import generate_private_key
from attest.note import Ed25519NoteSigner
from attest.tiles import TileId, tile_path, tiles_for_size
from clients.sdk import ClientError, LedgerClient, VerificationError
from ledger.log import Log
from ledger.sequencer import Sequencer, signed_head
from ledger.storage import Store
from ledger.tilestore import DirTileStore, Publisher, Stored, TileStore, TileStoreError
from tests.support import free_port, stop_group

ORIGIN = "test.example/logs/evidence"


class Published:
    """A log in SQLite, published to a directory after every batch."""

    def __init__(self, tmp: Path, tiles: TileStore | None = None) -> None:
        self.db = Store(f"sqlite:///{tmp / 'db.sqlite'}")
        self.db.migrate()
        self.signer = Ed25519NoteSigner(ORIGIN, generate_private_key())
        empty = signed_head(ORIGIN, 0, merkle.EMPTY_ROOT, self.signer)
        row = self.db.create_log("evidence", ORIGIN, "evidence", self.signer.vkey, empty)
        self.log = Log(self.db, row)
        self.seq = Sequencer(self.log, self.signer)
        self.dir = tmp / "static"
        self.tiles = tiles or DirTileStore(self.dir)
        self.publisher = Publisher(self.db, row.id, "evidence", ORIGIN, self.tiles)
        self.n = 0

    def add(self, count: int, *, publish: bool = True) -> int:
        entries = [f"entry {self.n + i}".encode() for i in range(count)]
        self.n += count
        size = self.seq.integrate(entries)[0].head.size
        if publish:
            assert self.publisher.publish(size) == size
        return size


@pytest.fixture
def static_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Python's http.server serving `tmp_path/static` on a free loopback port."""
    root = tmp_path / "static"
    root.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                if proc.poll() is not None:
                    raise RuntimeError("http.server exited") from None
                subprocess.run(["sleep", "0.05"], check=True)
        yield url, root
    finally:
        stop_group(proc)


def _audit(url: str, pub: Published) -> int:
    with LedgerClient("http://127.0.0.1:9", tiles_url=url) as c:  # the write server is unused
        return c.audit("evidence", pub.signer.verifier(), ORIGIN).size


def test_every_batch_is_auditable_from_the_static_server_alone(
    static_server: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = static_server
    pub = Published(tmp_path)
    # Sizes that end inside a tile, on a tile boundary, and across two levels' partial tiles.
    for count in (1, 254, 1, 300, 1, 511):
        size = pub.add(count)
        assert _audit(url, pub) == size
    assert size == 1068


def test_objects_sit_at_c2sp_paths_with_the_bytes_the_api_serves(tmp_path: Path) -> None:
    pub = Published(tmp_path)
    size = pub.add(700)
    for tid, width in tiles_for_size(size):
        data = (pub.dir / "logs/evidence" / tile_path(tid, width)).read_bytes()
        assert data == pub.log.tile(tid, size)
    for n in range(3):
        width = min(256, size - 256 * n)
        path = pub.dir / "logs/evidence" / tile_path(TileId(-1, n), width)
        assert path.is_file(), path
    note = (pub.dir / "logs/evidence/checkpoint").read_text()
    assert note == pub.log.head().checkpoint


class _CrashBeforeCheckpoint:
    """A directory store that fails the checkpoint write once: the crash point between the
    objects and the checkpoint (a real directory cannot be made to fail exactly there)."""

    def __init__(self, inner: DirTileStore) -> None:
        self.inner, self.url, self.armed = inner, inner.url, False

    def put(self, key: str, data: bytes, *, content_type: str, gzipped: bool = False) -> None:
        self.inner.put(key, data, content_type=content_type, gzipped=gzipped)

    def get(self, key: str) -> Stored | None:
        return self.inner.get(key)

    def replace_checkpoint(self, key: str, data: bytes, previous: Stored | None) -> bool:
        if self.armed:
            self.armed = False
            raise TileStoreError("injected crash before the checkpoint write")
        return self.inner.replace_checkpoint(key, data, previous)


def test_crash_before_the_checkpoint_leaves_the_previous_tree_then_catch_up_repairs(
    static_server: tuple[str, Path], tmp_path: Path
) -> None:
    url, root = static_server
    store = _CrashBeforeCheckpoint(DirTileStore(root))
    pub = Published(tmp_path, store)
    first = pub.add(300)
    store.armed = True
    with pytest.raises(TileStoreError, match="injected"):
        pub.add(100)
    assert _audit(url, pub) == first, "readers still see the last complete tree"
    assert pub.publisher.catch_up() == 400
    assert _audit(url, pub) == 400


def test_a_slower_frontend_never_puts_an_older_checkpoint_back(tmp_path: Path) -> None:
    pub = Published(tmp_path)
    small = pub.add(10, publish=False)
    big = pub.add(10)
    other = Publisher(pub.db, pub.log.id, "evidence", ORIGIN, DirTileStore(pub.dir))
    assert other.publish(small) == big
    assert pub.publisher.published_size()[0] == big


def test_store_behind_the_database_is_caught_up_at_start(tmp_path: Path) -> None:
    pub = Published(tmp_path)
    pub.add(5)
    pub.add(600, publish=False)  # committed, then the process died before publishing
    assert pub.publisher.published_size()[0] == 5
    assert pub.publisher.catch_up() == 605


def test_tampered_or_truncated_object_is_named(
    static_server: tuple[str, Path], tmp_path: Path
) -> None:
    url, root = static_server
    pub = Published(tmp_path)
    pub.add(300)
    bundle = root / "logs/evidence" / tile_path(TileId(-1, 0))
    data = bytearray(bundle.read_bytes())
    data[4] ^= 1  # inside the first entry (after its 2-byte length)
    bundle.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="entry 0 does not hash"):
        _audit(url, pub)
    bundle.write_bytes(bytes(data[:100]))
    with pytest.raises(VerificationError, match="entry bundle 0"):
        _audit(url, pub)
    (root / "logs/evidence" / tile_path(TileId(0, 1), 44)).unlink()
    with pytest.raises(ClientError, match=r"tile/0/001\.p/44: HTTP 404"):
        _audit(url, pub)
