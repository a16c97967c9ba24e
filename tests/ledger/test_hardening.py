"""Hardening of the served processes, tried from outside as an attacker would (loopback only).

* A retried anonymous write with the same token after a lost answer gets its receipt again; the
  token on another report is `token_spent` (the spend and the queueing are one transaction).
* The issuer's rate limit keys on the socket's address: a forged X-Forwarded-For from a peer
  that is not a `--trusted-proxy` changes nothing; from a trusted proxy it is believed.
* `bledger serve` on a port another process holds exits non-zero with a clear message and never
  says "serving on".
* Connection exhaustion: 2,000 idle sockets from one address leave the server answering another
  client (the per-client cap closes the excess at once), even with the server's file limit at
  1,024; a connection that never completes its request headers, or trickles them, gets 408 and
  is closed after the header timeout; a body trickled byte by byte gets 408 after the body
  timeout.

Counts and deadlines are bounded; no test asserts on how long anything took.
"""

from __future__ import annotations

import base64
import contextlib
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from attest import merkle
from attest import privacypass as pp
from ledger.serving import Limits, ServeError
from tests.ledger.test_issuer import (
    REQUEST_TYPE,
    anonymous_envelope,
    challenge_for,
    challenges,
    directory_keys,
    get_token,
    post_anonymous,
    running_issuer,
    running_lab,
    spki_of,
)
from tests.support import LOG, PROJECT_ROOT, LedgerProcess

ATTACKER = "127.0.0.2"  # the idle sockets' source address
DEADLINE = 60.0  # for a hung server: fails the test instead of hanging it


# -- (3) the anonymous write is idempotent per token and report ---------------------------------


def test_anonymous_retry_with_the_same_token_gets_the_receipt(tmp_path: Path) -> None:
    with running_lab(tmp_path) as lab, running_issuer(lab, "issuer1", "--rate", "50/hour") as iss:
        auth = pp.authorization(get_token(iss.base_url, challenges(lab.url)[0]))
        env = anonymous_envelope(lab.url, "said once, sent twice")
        first = post_anonymous(lab.url, env, auth)
        assert first.status_code == 202, first.text
        # The answer was lost (a crash, a dropped connection): the client sends it again.
        again = post_anonymous(lab.url, env, auth)
        assert again.status_code == 202, again.text
        leaf = merkle.leaf_hash(env.canonical_bytes())
        assert first.json()["leaf_hash"] == again.json()["leaf_hash"]
        assert base64.b64decode(again.json()["leaf_hash"]) == leaf
        # The same token on another report is refused.
        other = post_anonymous(lab.url, anonymous_envelope(lab.url, "another report"), auth)
        assert (other.status_code, other.json()["error"]) == (403, "token_spent")


# -- (4) X-Forwarded-For only from trusted proxies ----------------------------------------------


def _token_request(issuer_url: str, challenge: pp.PrivateTokenChallenge, xff: str) -> int:
    assert challenge.token_key is not None
    request, _ = pp.begin_issuance(challenge.token_key, challenge.challenge)
    r = httpx.post(
        issuer_url + "/token-request",
        content=request.encode(),
        headers={"Content-Type": REQUEST_TYPE, "X-Forwarded-For": xff},
        timeout=60.0,
    )
    return r.status_code


def test_forged_x_forwarded_for_does_not_bypass_the_rate_limit(tmp_path: Path) -> None:
    with running_lab(tmp_path) as lab:
        with running_issuer(lab, "issuer1", "--rate", "2/hour") as iss:
            challenge = challenge_for(spki_of(directory_keys(iss.base_url)[0]), lab.url)
            statuses = [
                _token_request(iss.base_url, challenge, f"198.51.100.{i}") for i in range(4)
            ]
            assert statuses == [200, 200, 429, 429], "the forged header chose the bucket"
        # Behind a proxy the operator names, the header is the client's address.
        proxied = ("--rate", "2/hour", "--trusted-proxy", "127.0.0.1/32")
        with running_issuer(lab, "issuer2", *proxied) as iss:
            challenge = challenge_for(spki_of(directory_keys(iss.base_url)[0]), lab.url)
            statuses = [
                _token_request(iss.base_url, challenge, f"198.51.100.{i}") for i in range(4)
            ]
            assert statuses == [200] * 4
            same = [_token_request(iss.base_url, challenge, "203.0.113.9") for _ in range(3)]
            assert same == [200, 200, 429]


# -- (8) a port someone else holds --------------------------------------------------------------


def test_serve_on_a_taken_port_fails_before_saying_serving(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        cmd = [sys.executable, "-m", "clients.cli", "serve", "--data", str(tmp_path / "data")]
        cmd += ["--host", "127.0.0.1", "--port", str(port)]
        res = subprocess.run(
            cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=DEADLINE, check=False
        )
    assert res.returncode != 0
    assert f"127.0.0.1:{port} is already in use" in res.stderr, res.stderr
    assert "serving on" not in res.stdout + res.stderr
    assert not (tmp_path / "data").exists(), "nothing is created before the port is held"


# -- (5) connection exhaustion ------------------------------------------------------------------


class LimitedLedger(LedgerProcess):
    """A ledger whose process may open at most 1,024 files (soft and hard), as on many hosts."""

    def command(self) -> list[str]:
        return ["prlimit", "--nofile=1024:1024", *super().command()]


def _open_idle(n: int, address: str, port: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.settimeout(10.0)
        s.bind((address, 0))
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
    return socks


def _closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(1024) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


@contextlib.contextmanager
def _closing(socks: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield socks
    finally:
        for s in socks:
            s.close()


def _require_sources(n: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n + 256:
        pytest.skip(f"this process may open only {hard} files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with socket.socket() as s:
        try:
            s.bind((ATTACKER, 0))
        except OSError as e:
            pytest.skip(f"cannot bind {ATTACKER}: {e}")


def test_idle_sockets_from_one_host_do_not_lock_others_out(tmp_path: Path) -> None:
    idle, cap = 2000, 16
    _require_sources(idle)
    limits = ("--per-client-connections", str(cap), "--header-timeout", "600")
    srv = LimitedLedger(tmp_path / "data", extra_args=(*limits, "--max-connections", "512"))
    srv.start()
    try:
        with _closing(_open_idle(idle, ATTACKER, srv.port)) as socks:
            deadline = time.monotonic() + DEADLINE
            while sum(_closed_by_server(s) for s in socks) < idle - cap:
                assert time.monotonic() < deadline, "the server did not shed the excess"
                time.sleep(0.2)
            r = httpx.get(f"{srv.base_url}/logs", timeout=DEADLINE)
            assert r.status_code == 200
            still_open = [s for s in socks if not _closed_by_server(s)]
            assert len(still_open) == cap, "the cap, not a timeout, shed the idle sockets"
    finally:
        srv.stop()


def test_a_request_that_never_completes_its_headers_is_closed(tmp_path: Path) -> None:
    srv = LedgerProcess(tmp_path / "data", extra_args=("--header-timeout", "1"))
    srv.start()
    try:
        silent = socket.create_connection(("127.0.0.1", srv.port), timeout=DEADLINE)
        trickle = socket.create_connection(("127.0.0.1", srv.port), timeout=DEADLINE)
        with silent, trickle:
            trickle.sendall(b"GET /logs HTTP/1.1\r\nHost: x\r\n")
            trickle.settimeout(0.3)
            answer = b""
            deadline = time.monotonic() + DEADLINE
            while not answer.endswith(b"\r\n\r\n") or b"408" not in answer:
                assert time.monotonic() < deadline, "a trickling request was never cut off"
                with contextlib.suppress(OSError):
                    trickle.sendall(b"X")  # one more byte of a header that never ends
                with contextlib.suppress(TimeoutError):
                    chunk = trickle.recv(1024)
                    if chunk == b"":
                        break
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert silent.recv(1024).startswith(b"HTTP/1.1 408")
            assert silent.recv(1024) == b"", "closed after the 408"
        # And the server still serves.
        assert httpx.get(f"{srv.base_url}/logs", timeout=DEADLINE).status_code == 200
    finally:
        srv.stop()


def test_a_request_body_that_trickles_is_cut_off(tmp_path: Path) -> None:
    srv = LedgerProcess(tmp_path / "data", extra_args=("--body-timeout", "1"))
    srv.start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=DEADLINE) as slow:
            head = f"POST /logs/{LOG}/entries HTTP/1.1\r\nHost: x\r\n"
            head += "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
            slow.sendall(head.encode() + b'{"payload": "')
            slow.settimeout(0.3)
            answer = b""
            deadline = time.monotonic() + DEADLINE
            while b"\r\n\r\n" not in answer:
                assert time.monotonic() < deadline, "a trickling body was never cut off"
                with contextlib.suppress(OSError):
                    slow.sendall(b"A")  # one more byte of a body that never ends
                with contextlib.suppress(TimeoutError):
                    chunk = slow.recv(1024)
                    if chunk == b"":
                        break
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 408"), answer
        # Nothing was logged, and the server still serves.
        r = httpx.get(f"{srv.base_url}/logs/{LOG}/checkpoint", timeout=DEADLINE)
        assert r.status_code == 200
        assert r.text.splitlines()[1] == "0", "a cut-off body never becomes an entry"
    finally:
        srv.stop()


def _one_answer(sock: socket.socket) -> bytes:
    """One whole HTTP answer with a Content-Length from `sock` (b"" if it was closed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_kept_alive_connection_gets_fresh_clocks_for_each_request(tmp_path: Path) -> None:
    # Requests on one connection for longer than both timeouts, each trickling its headers
    # and then its body over most of the time it takes, so that when an earlier request's
    # clock would have run out a later request's same clock is running: each request's clocks
    # start afresh, so none is cut off. Then a request on the same connection that never
    # completes its headers still gets 408.
    limits = ("--header-timeout", "1", "--body-timeout", "1")
    srv = LedgerProcess(tmp_path / "data", extra_args=limits)
    srv.start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=DEADLINE) as conn:
            body = b'{"envelopes": 1}'
            rest = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            until = time.monotonic() + 3.5
            served = 0
            while time.monotonic() < until:
                conn.sendall(f"POST /logs/{LOG}/entries/batch HTTP/1.1\r\nHost: x\r\n".encode())
                time.sleep(0.35)
                conn.sendall(rest.encode())
                time.sleep(0.35)
                conn.sendall(body)
                assert _one_answer(conn).startswith(b"HTTP/1.1 400"), served
                served += 1
                time.sleep(0.1)
            conn.sendall(b"GET /logs HTTP/1.1\r\nHost: x\r\n")
            answer = _one_answer(conn)
            assert answer.startswith(b"HTTP/1.1 408"), answer
    finally:
        srv.stop()


def test_the_file_limit_is_raised_to_its_hard_value() -> None:
    code = "from ledger.serving import raise_file_limit; print(raise_file_limit())"
    res = subprocess.run(
        ["prlimit", "--nofile=256:1024", sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=True,
    )
    assert res.stdout.strip() == "1024"


def test_trusted_proxies_are_networks() -> None:
    limits = Limits(trusted_proxies=("10.0.0.0/8", "::1"))
    assert limits.is_trusted("10.1.2.3") and limits.is_trusted("::1")
    assert not limits.is_trusted("11.0.0.1") and not limits.is_trusted("not an address")
    assert not Limits().is_trusted("127.0.0.1"), "no proxy is trusted unless named"
    with pytest.raises(ServeError, match="not an address or CIDR"):
        Limits(trusted_proxies=("10.0.0.0/33",))
