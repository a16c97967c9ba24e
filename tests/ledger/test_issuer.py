"""The Privacy Pass issuer (`ledger.issuer`) against a real ledger, both real processes on loopback.

Helpers here (`Lab`, `IssuerProcess`, `evidence_token_keys`, `challenges`, `get_token`) are
shared with tests/clients/test_report.py and tests/ledger/test_anonymity.py.
"""

from __future__ import annotations

import base64
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
import tomli_w
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attest import privacypass as pp
from attest.anonymous import sign_one_time
from attest.dsse import Envelope
from attest.keys import generate_private_key, verifier_key, write_key_pair
from attest.predicates import (
    CheckpointRef,
    CredentialEvent,
    FieldReport,
    KeyEvent,
    ModelId,
    TokenKey,
)
from attest.statement import Statement, parse_statement, sign_statement, statement_bytes
from clients.sdk import LedgerClient, verifier_from_vkey
from ledger.config import CONFIG_NAME, init_data_dir
from ledger.issuer import (
    ClientContext,
    Issuer,
    IssuerConfig,
    IssuerConfigError,
    RateLimitedError,
    TokenBucketAttester,
    init_issuer_dir,
    open_issuer,
    parse_rate,
)
from tests.support import (
    ORIGIN_PREFIX,
    LedgerProcess,
    ServiceProcess,
    check_log,
)

HOUR = 3600
DIRECTORY = "/.well-known/private-token-issuer-directory"
REQUEST_TYPE = "application/private-token-request"


# -- helpers shared with the other anonymous-tier tests -------------------------------------------


@dataclass
class Lab:
    """A running ledger (short anonymous interval) with one registered lab key, `lab`."""

    root: Path
    ledger: LedgerProcess
    lab_key: Ed25519PrivateKey

    @property
    def url(self) -> str:
        """The ledger's base URL."""
        return self.ledger.base_url

    def new_key(self, name: str) -> tuple[Path, Ed25519PrivateKey]:
        """A key pair at ROOT/NAME.pem (key name NAME)."""
        key = generate_private_key()
        path = self.root / f"{name}.pem"
        write_key_pair(path, key)
        return path, key

    def submit(self, predicate: object, signers: list[tuple[str, Ed25519PrivateKey]]) -> None:
        """Sign `predicate` (built by a callable taking the seen checkpoint) and submit it to
        the evidence log, verifying the proof."""
        with LedgerClient(self.url) as c:
            info = c.log_info("evidence")
            verifier = verifier_from_vkey(info.vkey)
            cp, _ = c.checkpoint("evidence", verifier, info.origin)
            seen = CheckpointRef(origin=cp.origin, size=cp.size, root=cp.root_hash.hex())
            assert callable(predicate)
            env = sign_statement(predicate(seen), signers)
            c.submit("evidence", env, verifier, info.origin)

    def certify_issuer(self, name: str) -> tuple[Path, Ed25519PrivateKey]:
        """A new issuer key NAME, registered by the lab (it co-signs: proof of possession)."""
        path, key = self.new_key(name)
        vkey = verifier_key(name, key.public_key())

        def event(seen: CheckpointRef) -> KeyEvent:
            return KeyEvent(
                seen_checkpoint=seen,
                issued_at=int(time.time()),
                action="register",
                role="issuer",
                key=vkey,
            )

        self.submit(event, [("lab", self.lab_key), (name, key)])
        return path, key

    def issue_credential(
        self,
        issuer: tuple[str, Ed25519PrivateKey],
        holder_vkey: str,
        tier: str,
        credential_id: str,
    ) -> None:
        """A CredentialEvent `issue` by `issuer` for `holder_vkey` in `tier`, valid a day."""

        def event(seen: CheckpointRef) -> CredentialEvent:
            return CredentialEvent(
                seen_checkpoint=seen,
                issued_at=int(time.time()),
                action="issue",
                credential_id=credential_id,
                tier=tier,
                holder_key=holder_vkey,
                expires_at=int(time.time()) + 86400,
            )

        self.submit(event, [issuer])


@contextmanager
def running_lab(root: Path, interval_ms: int = 200) -> Iterator[Lab]:
    """A ledger with a registered lab key, stopped when the block exits."""
    root.mkdir(parents=True, exist_ok=True)
    lab_key = generate_private_key()
    pub = write_key_pair(root / "lab.pem", lab_key)
    extra = ("--allow-lab", str(pub), "--anonymous-interval-ms", str(interval_ms))
    _set_anonymous_interval(root / "ledger", interval_ms)
    srv = LedgerProcess(root / "ledger", extra_args=extra)
    try:
        srv.start()
        yield Lab(root, srv, lab_key)
    finally:
        try:
            srv.stop()
        finally:
            srv.kill9()


def _set_anonymous_interval(data: Path, interval_ms: int) -> None:
    """Write the anonymous log's batch interval into a fresh ledger data directory's config.

    `bledger serve --anonymous-interval-ms` is accepted but (so far) not applied, so the
    interval also goes where the server reads it for certain.
    """
    init_data_dir(data, origin_prefix=ORIGIN_PREFIX)
    path = data / CONFIG_NAME
    raw = tomllib.loads(path.read_text())
    for lc in raw["logs"]:
        if lc["partition"] == "anonymous":
            lc["interval_ms"] = interval_ms
    path.write_text(tomli_w.dumps(raw))


@dataclass
class IssuerProcess(ServiceProcess):
    """One `python -m clients.issuer_cmd serve` process; stdout/stderr go to files beside DATA."""

    ledger: str
    key: Path
    args: tuple[str, ...] = ()

    label: ClassVar[str] = "issuer"
    ready_path: ClassVar[str] = DIRECTORY

    def command(self) -> list[str]:
        """The issuer's command line."""
        cmd = [sys.executable, "-m", "clients.issuer_cmd", "serve", "--data", str(self.data)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--ledger", self.ledger, "--key", str(self.key)]
        return [*cmd, *self.args]


@contextmanager
def running_issuer(lab: Lab, name: str = "issuer1", *args: str) -> Iterator[IssuerProcess]:
    """A certified issuer key NAME and its issuer process, stopped when the block exits."""
    key_path, _ = lab.certify_issuer(name)
    proc = IssuerProcess(lab.root / f"{name}-data", lab.url, key_path, args)
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


def directory_keys(issuer_url: str) -> list[dict[str, object]]:
    """The issuer directory's token-keys list."""
    r = httpx.get(issuer_url + DIRECTORY)
    assert r.status_code == 200, r.text
    keys = r.json()["token-keys"]
    assert isinstance(keys, list)
    return keys


def spki_of(entry: dict[str, object]) -> bytes:
    """The SPKI DER bytes of a directory token-keys entry."""
    return base64.urlsafe_b64decode(str(entry["token-key"]))


def kid_of(spki: bytes) -> str:
    """The token key id (hex) of an SPKI."""
    return pp.token_key_id(pp.token_key_from_bytes(spki)).hex()


def evidence_token_keys(ledger_url: str) -> list[TokenKey]:
    """Every TokenKey statement in the evidence log, in log order, after re-auditing the log."""
    with LedgerClient(ledger_url) as c:
        info = c.log_info("evidence")
    cp = check_log(ledger_url, info.vkey, info.origin, "evidence")
    out = []
    for i in range(cp.size):
        raw = httpx.get(f"{ledger_url}/logs/evidence/entries/{i}").json()["entry"]
        env = Envelope.from_json(base64.b64decode(raw))
        stmt = parse_statement(env.payload)
        if isinstance(stmt.predicate, TokenKey):
            out.append(stmt.predicate)
    return out


def anonymous_info(ledger_url: str) -> tuple[str, str]:
    """(vkey, origin) of the anonymous log."""
    with LedgerClient(ledger_url) as c:
        info = c.log_info("anonymous")
    return info.vkey, info.origin


def anonymous_envelope(ledger_url: str, text: str) -> Envelope:
    """A one-time-signed anonymous field report seeing the anonymous log's latest checkpoint."""
    vkey, origin = anonymous_info(ledger_url)
    with LedgerClient(ledger_url) as c:
        cp, _ = c.checkpoint("anonymous", verifier_from_vkey(vkey), origin)
    report = FieldReport(
        seen_checkpoint=CheckpointRef(origin=cp.origin, size=cp.size, root=cp.root_hash.hex()),
        issued_at=int(time.time()) // HOUR * HOUR,
        model=ModelId(name="test-model", version="1"),
        category="grief",
        tier="anonymous",
        text=text,
    )
    return sign_one_time(statement_bytes(Statement.of(report)))


def post_anonymous(
    ledger_url: str, env: Envelope, auth: str | None = None, client: httpx.Client | None = None
) -> httpx.Response:
    """POST `env` to the anonymous log, with `auth` as the Authorization header if given."""
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth
    url = f"{ledger_url}/logs/anonymous/entries"
    if client is not None:
        return client.post(url, content=env.canonical_bytes(), headers=headers)
    return httpx.post(url, content=env.canonical_bytes(), headers=headers, timeout=60.0)


def challenges(ledger_url: str) -> list[pp.PrivateTokenChallenge]:
    """The PrivateToken challenges the anonymous log answers a token-less write with."""
    r = post_anonymous(ledger_url, anonymous_envelope(ledger_url, "challenge please"))
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "token_required"
    return pp.parse_www_authenticate(r.headers["www-authenticate"])


def get_token(
    issuer_url: str,
    challenge: pp.PrivateTokenChallenge,
    client: httpx.Client | None = None,
) -> pp.Token:
    """A token from the issuer for `challenge` (RFC 9578 issuance, checked by the client)."""
    assert challenge.token_key is not None
    request, state = pp.begin_issuance(challenge.token_key, challenge.challenge)
    http = client or httpx.Client()
    r = http.post(
        issuer_url + "/token-request",
        content=request.encode(),
        headers={"Content-Type": REQUEST_TYPE},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/private-token-response"
    return pp.finalize_issuance(state, pp.TokenResponse.decode(r.content))


def challenge_for(spki: bytes, ledger_url: str) -> pp.PrivateTokenChallenge:
    """The log's challenge for the token key `spki`."""
    for c in challenges(ledger_url):
        if c.token_key is not None and pp.token_key_bytes(c.token_key) == spki:
            return c
    raise AssertionError(f"the log offers no challenge for token key {kid_of(spki)}")


def wait_until(what: str, ok: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll `ok` until true; a deadline for a hung condition, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# -- pure parts -----------------------------------------------------------------------------------


def test_token_bucket_limits_per_address_and_refills() -> None:
    now = [1000.0]
    bucket = TokenBucketAttester(3, clock=lambda: now[0])
    a, b = ClientContext("10.0.0.1"), ClientContext("10.0.0.2")
    for _ in range(3):
        bucket.attest(a)
    with pytest.raises(RateLimitedError) as err:
        bucket.attest(a)
    assert err.value.retry_after == 1200, "one token per 20 minutes refills at 3/hour"
    bucket.attest(b)  # another address has its own bucket
    now[0] += 1200
    bucket.attest(a)
    with pytest.raises(RateLimitedError):
        bucket.attest(a)


def test_token_bucket_holds_no_address() -> None:
    bucket = TokenBucketAttester(5)
    bucket.attest(ClientContext("192.0.2.77"))
    assert all(b"192.0.2.77" not in k for k in bucket._buckets)
    assert "192.0.2.77" not in repr(ClientContext("192.0.2.77"))


def test_parse_rate() -> None:
    assert parse_rate("10/hour") == 10
    assert parse_rate("5/h") == 5
    assert parse_rate("7") == 7
    assert parse_rate("48/day") == 2
    with pytest.raises(IssuerConfigError):
        parse_rate("ten/hour")
    with pytest.raises(IssuerConfigError):
        parse_rate("3/minute")


def test_config_refuses_overlap_not_shorter_than_lifetime(tmp_path: Path) -> None:
    with pytest.raises(IssuerConfigError, match="overlap"):
        IssuerConfig(tmp_path, "http://x", tmp_path / "k.pem", "k", lifetime_s=10, overlap_s=10)
    with pytest.raises(IssuerConfigError, match="check interval"):
        IssuerConfig(
            tmp_path, "http://x", tmp_path / "k.pem", "k", overlap_s=5, check_interval_s=5.0
        )


def test_config_first_run_needs_ledger_and_key(tmp_path: Path) -> None:
    with pytest.raises(IssuerConfigError, match="first run"):
        init_issuer_dir(tmp_path / "d", ledger="http://x")
    key = tmp_path / "iss.pem"
    write_key_pair(key, generate_private_key())
    cfg = init_issuer_dir(tmp_path / "d", ledger="http://x/", key=key, rate_per_hour=4)
    assert (cfg.key_name, cfg.ledger, cfg.rate_per_hour) == ("iss", "http://x", 4)
    again = init_issuer_dir(tmp_path / "d", rate_per_hour=9)
    assert (again.key, again.rate_per_hour) == (key.resolve(), 9), "later runs read the config"


# -- against a real ledger -----------------------------------------------------------------------


def test_directory_token_request_and_publication(tmp_path: Path) -> None:
    with running_lab(tmp_path) as lab, running_issuer(lab) as iss:
        r = httpx.get(iss.base_url + DIRECTORY)
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/private-token-issuer-directory"
        assert "max-age" in r.headers["cache-control"]
        body = r.json()
        assert set(body) == {"issuer-request-uri", "token-keys"}
        assert body["issuer-request-uri"] == "/token-request"
        (entry,) = body["token-keys"]
        assert set(entry) == {"token-type", "token-key", "not-before"}
        assert entry["token-type"] == 2
        assert isinstance(entry["not-before"], int)
        text = str(entry["token-key"])
        assert len(text) % 4 == 0 and "+" not in text and "/" not in text, "padded base64url"
        spki = spki_of(entry)
        key = pp.token_key_from_bytes(spki)  # the exact RFC 9578 RSASSA-PSS SPKI

        # Published in the evidence log, signed by the certified issuer key, visible to all.
        (published,) = evidence_token_keys(lab.url)
        assert published.action == "publish"
        assert base64.b64decode(published.token_key) == spki
        assert published.not_after > time.time()
        assert published.token_key_id() == kid_of(spki)

        # The log challenges with that key, naming the issuer key's name.
        (challenge,) = challenges(lab.url)
        assert challenge.token_key is not None
        assert pp.token_key_bytes(challenge.token_key) == spki
        assert challenge.challenge.issuer_name == "issuer1"
        _, origin = anonymous_info(lab.url)
        assert challenge.challenge.origin_info == (origin,)

        token = get_token(iss.base_url, challenge)
        pp.verify_token(key, token, pp.challenge_digest(challenge.challenge))
        r = post_anonymous(lab.url, anonymous_envelope(lab.url, "hello"), pp.authorization(token))
        assert r.status_code == 202, r.text


def test_token_request_errors(tmp_path: Path) -> None:
    with running_lab(tmp_path) as lab, running_issuer(lab) as iss:
        (entry,) = directory_keys(iss.base_url)
        spki = spki_of(entry)
        key = pp.token_key_from_bytes(spki)
        truncated = pp.token_key_id(key)[-1]
        url = iss.base_url + "/token-request"

        def post(body: bytes, content_type: str = REQUEST_TYPE) -> httpx.Response:
            return httpx.post(url, content=body, headers={"Content-Type": content_type})

        good = pp.TokenRequest(truncated, b"\x01" * pp.NK).encode()
        cases = {
            "wrong content type": (post(good, "application/octet-stream"), 415),
            "empty body": (post(b""), 400),
            "two bytes": (post(b"\x00\x02"), 400),
            "another token type": (post(b"\x00\x01" + good[2:]), 422),
            "short blinded_msg": (post(good[:-1]), 422),
            "trailing byte": (post(good + b"\x00"), 422),
            "unknown truncated key id": (post(bytes([0, 2, truncated ^ 0xFF]) + good[3:]), 422),
            "blinded_msg not below n": (post(bytes([0, 2, truncated]) + b"\xff" * pp.NK), 422),
            "oversized body": (post(b"\x00" * 10_000), 400),
        }
        for name, (resp, status) in cases.items():
            assert resp.status_code == status, f"{name}: {resp.status_code} {resp.text}"
            assert set(resp.json()) == {"error", "detail"}, name
        assert httpx.get(url).status_code == 405
        # After all that, the issuer still works.
        assert post(good).status_code == 200


def test_rate_limit_refuses_after_n_per_address(tmp_path: Path) -> None:
    with running_lab(tmp_path) as lab, running_issuer(lab, "issuer1", "--rate", "3/hour") as iss:
        challenge = challenges(lab.url)[0]
        for _ in range(3):
            get_token(iss.base_url, challenge)
        assert challenge.token_key is not None
        request, _ = pp.begin_issuance(challenge.token_key, challenge.challenge)
        r = httpx.post(
            iss.base_url + "/token-request",
            content=request.encode(),
            headers={"Content-Type": REQUEST_TYPE},
        )
        assert r.status_code == 429
        assert r.json()["error"] == "rate_limited"
        assert int(r.headers["retry-after"]) > 0
        # The budget is per client address: another loopback address still gets a token.
        other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
        with other:
            get_token(iss.base_url, challenge, client=other)


def test_start_fails_clearly_when_issuer_key_is_not_certified(tmp_path: Path) -> None:
    with running_lab(tmp_path) as lab:
        key_path, _ = lab.new_key("stranger")
        proc = IssuerProcess(tmp_path / "stranger-data", lab.url, key_path)
        proc.start(wait=False)
        assert proc.wait_exit() != 0
        err = proc.stderr()
        assert "refused to publish token key" in err
        assert "keys certify --role issuer" in err
        assert evidence_token_keys(lab.url) == []


def test_restart_keeps_its_published_key(tmp_path: Path) -> None:
    with running_lab(tmp_path) as lab, running_issuer(lab) as iss:
        (before,) = directory_keys(iss.base_url)
        iss.stop()
        iss.start()
        (after,) = directory_keys(iss.base_url)
        assert after == before
        assert len(evidence_token_keys(lab.url)) == 1, "no second publication"
        key_files = list((iss.data / "token-keys").glob("*.pem"))
        assert len(key_files) == 1
        assert key_files[0].stat().st_mode & 0o777 == 0o600
        assert b"BEGIN PRIVATE KEY" in key_files[0].read_bytes(), "PKCS#8 PEM"


def test_rotation_with_overlap_and_refusal_after_expiry(tmp_path: Path) -> None:
    """Key A (lifetime 1 h) gets successor B when A enters its overlap (the last 10 min); both
    are served and accepted until A expires; then A is retired in the evidence log, and a
    token issued under A is refused while B keeps working.

    The issuer's lifecycle runs on an injected clock moved by the test (no wall-clock waits);
    the ledger and the key events' timestamps stay on real time.
    """
    now = [float(int(time.time()))]
    with running_lab(tmp_path) as lab:
        key_path, _ = lab.certify_issuer("issuer1")
        cfg = init_issuer_dir(
            tmp_path / "iss", ledger=lab.url, key=key_path, lifetime_s=HOUR, overlap_s=600
        )
        issuer = _issuer_on_clock(cfg, lambda: now[0])
        issuer.rotate()
        ((a_record, a),) = issuer.served()
        token_a1 = _token(issuer, a, lab.url)

        now[0] += HOUR - 700  # 700 s left: not yet in the overlap, nothing new
        issuer.rotate()
        assert [spki for _, spki in issuer.served()] == [a]

        now[0] += 100  # 600 s left: the successor is published before A is served alone
        issuer.rotate()
        keys = [spki for _, spki in issuer.served()]
        b = keys[0]
        assert keys == [b, a], "the newer key is preferred, the old one still served"
        published = {tk.token_key_id() for tk in evidence_token_keys(lab.url)}
        assert {kid_of(a), kid_of(b)} <= published, "the successor was published first"
        # During the overlap both keys are accepted.
        token_a2 = _token(issuer, a, lab.url)
        token_b = _token(issuer, b, lab.url)
        for token, text in ((token_a1, "under A"), (token_b, "under B")):
            r = post_anonymous(lab.url, anonymous_envelope(lab.url, text), pp.authorization(token))
            assert r.status_code == 202, r.text

        now[0] += 600  # A's not_after: the next lifecycle run retires it
        issuer.rotate()
        assert [spki for _, spki in issuer.served()] == [b]
        retired = [tk for tk in evidence_token_keys(lab.url) if tk.action == "retire"]
        assert [tk.token_key_id() for tk in retired] == [a_record.token_key_id]
        offered = [c.token_key for c in challenges(lab.url)]
        assert all(k is not None and pp.token_key_bytes(k) != a for k in offered)
        r = post_anonymous(lab.url, anonymous_envelope(lab.url, "late"), pp.authorization(token_a2))
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "bad_token"
        # B keeps working.
        token_b2 = _token(issuer, b, lab.url)
        r = post_anonymous(lab.url, anonymous_envelope(lab.url, "B"), pp.authorization(token_b2))
        assert r.status_code == 202, r.text


def _issuer_on_clock(cfg: IssuerConfig, clock: Callable[[], float]) -> Issuer:
    """`open_issuer(cfg)` with the key lifecycle on `clock` (the publisher stays on real time:
    the ledger checks key events' `issuedAt` against its own clock)."""
    plain = open_issuer(cfg)
    return Issuer(cfg, plain.store, plain.publisher, plain.attester, clock=clock)


def _token(issuer: Issuer, spki: bytes, ledger_url: str) -> pp.Token:
    """A token under `spki` for the ledger's challenge, issued in-process."""
    challenge = challenge_for(spki, ledger_url)
    assert challenge.token_key is not None
    request, state = pp.begin_issuance(challenge.token_key, challenge.challenge)
    response = issuer.issue(request.encode(), ClientContext("127.0.0.1"))
    return pp.finalize_issuance(state, pp.TokenResponse.decode(response))


def test_token_under_a_retired_key_is_refused(tmp_path: Path) -> None:
    """Retirement before expiry (a compromised key), through the library in-process."""
    with running_lab(tmp_path) as lab:
        key_path, _ = lab.certify_issuer("issuer1")
        cfg = init_issuer_dir(tmp_path / "iss", ledger=lab.url, key=key_path)
        issuer = open_issuer(cfg)
        issuer.rotate()
        ((record, spki),) = issuer.served()
        challenge = challenge_for(spki, lab.url)
        assert challenge.token_key is not None
        request, state = pp.begin_issuance(challenge.token_key, challenge.challenge)
        response = issuer.issue(request.encode(), ClientContext("127.0.0.1"))
        token = pp.finalize_issuance(state, pp.TokenResponse.decode(response))

        issuer.retire(record.token_key_id)
        assert issuer.served() == []
        retired = [tk for tk in evidence_token_keys(lab.url) if tk.action == "retire"]
        assert [tk.token_key_id() for tk in retired] == [record.token_key_id]
        r = post_anonymous(lab.url, anonymous_envelope(lab.url, "x"), pp.authorization(token))
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "bad_token"
        # The next lifecycle run publishes a fresh key, which the log accepts at once.
        issuer.rotate()
        ((fresh, fresh_spki),) = issuer.served()
        assert fresh.token_key_id != record.token_key_id
        challenge_for(fresh_spki, lab.url)


def test_generated_key_avoids_a_live_truncated_key_id(tmp_path: Path) -> None:
    """RFC 9578 §5.5: a new key whose truncated id collides with a live key's is regenerated.

    The generator first returns the live key itself (the surest collision), then a fresh key.
    """
    with running_lab(tmp_path) as lab:
        key_path, _ = lab.certify_issuer("issuer1")
        cfg = init_issuer_dir(
            tmp_path / "iss",
            ledger=lab.url,
            key=key_path,
            lifetime_s=100,
            overlap_s=50,
            check_interval_s=1.0,
        )
        first, second = (rsa.generate_private_key(65537, 2048) for _ in range(2))
        feed = iter([first, first, second])
        issuer = open_issuer(cfg)
        issuer._generate = lambda: next(feed)
        issuer.rotate()
        issuer._publish_new(int(time.time()))
        ids = {r.token_key_id for r, _ in issuer.served()}
        assert ids == {pp.token_key_id(k.public_key()).hex() for k in (first, second)}
