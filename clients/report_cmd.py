"""`bledger report`: file a field report about a deployed model, anonymously or attested.

Anonymous (`--anonymous --issuer URL`), the flow of RFC 9576 with the ledger as origin:

1. fetch the anonymous log's latest checkpoint (verified with the log's key);
2. sign the report with a fresh one-time key (`attest.anonymous.sign_one_time`), `issuedAt`
   rounded down to the hour;
3. post it without a token: the log answers 401 with PrivateToken challenges, one per token key
   it accepts;
4. keep the challenges whose token key the issuer's directory lists (preferred key first);
5. ask the issuer for a token (`begin_issuance` / `finalize_issuance`: the issuer signs blind,
   so it cannot link the token to this request);
6. post the same report again with `Authorization: PrivateToken token=...`: 202 and a signed
   receipt, verified with the log's key and checked to name this report's leaf hash;
7. with `--wait`, poll the inclusion proof by leaf hash and verify it against a checkpoint
   verified with the log's key.

Nothing identifying is sent: no key of the reporter, no stable identifier (a new one-time key
per report, a fresh connection pool per party, a constant User-Agent), and a time rounded to the
hour. What the network reveals (the address) is not stored by the ledger; see docs/anonymous.md.

Attested (`--credential-tier T --key HOLDER_KEY`): the report is signed by the holder's key and
submitted like any statement; the log admits it only when enough issuers vouch for that key in
tier T, and the returned tlog-proof is verified.
"""

from __future__ import annotations

import base64
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import click
import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attest import merkle
from attest import privacypass as pp
from attest.anonymous import sign_one_time
from attest.checkpoint import Checkpoint
from attest.dsse import Envelope
from attest.errors import AttestError
from attest.keys import load_private_key
from attest.note import NoteError, NoteVerifier
from attest.predicates import CheckpointRef, FieldReport, ModelId
from attest.receipt import Receipt, open_receipt
from attest.statement import Statement, sign_statement, statement_bytes
from attest.tlog_proof import TlogProof, format_tlog_proof
from clients.sdk import ClientError, LedgerClient, LogInfo, VerificationError, verifier_from_vkey

__all__ = [
    "HOUR",
    "USER_AGENT",
    "AnonymousReceipt",
    "Inclusion",
    "IssuerDirectory",
    "ReportError",
    "ReportFields",
    "anonymous_log",
    "build_report",
    "choose_challenge",
    "fetch_token",
    "file_anonymous",
    "file_attested",
    "http_client",
    "issuer_directory",
    "report",
    "wait_for_inclusion",
]

HOUR = 3600
USER_AGENT = "bledger"
"""The User-Agent of every request: the same for every reporter, so it tells nothing."""

DIRECTORY_PATH = "/.well-known/private-token-issuer-directory"
REQUEST_MEDIA_TYPE = "application/private-token-request"
RESPONSE_MEDIA_TYPE = "application/private-token-response"
DEFAULT_MODEL_VERSION = "unspecified"


class ReportError(ClientError):
    """Filing a report failed; `diagnostic` says where."""


@dataclass(frozen=True)
class ReportFields:
    """What a person reports: the model, the behaviour category and the text."""

    model: str
    model_version: str
    category: str
    text: str


@dataclass(frozen=True)
class AnonymousReceipt:
    """An anonymous write the log accepted: the envelope, its leaf hash and the verified receipt.

    `note` is the receipt's signed note text, as the log sent it.
    """

    envelope: Envelope
    leaf_hash: bytes
    receipt: Receipt
    note: str


@dataclass(frozen=True)
class Inclusion:
    """A verified inclusion: the entry's index, the checkpoint, and a C2SP tlog-proof."""

    index: int
    checkpoint: Checkpoint
    tlog_proof: str


def build_report(
    fields: ReportFields,
    seen: Checkpoint,
    issued_at: int,
    credential_tier: str | None = None,
) -> FieldReport:
    """The FieldReport predicate: attested under `credential_tier` when given, else anonymous.

    `ReportError` when a field is invalid.
    """
    try:
        return FieldReport(
            seen_checkpoint=CheckpointRef(
                origin=seen.origin, size=seen.size, root=seen.root_hash.hex()
            ),
            issued_at=issued_at,
            model=ModelId(name=fields.model, version=fields.model_version),
            category=fields.category,
            tier="anonymous" if credential_tier is None else "attested",
            text=fields.text,
            credential_tier=credential_tier,
        )
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        raise ReportError(f"invalid report: {_first_line(str(e))}") from e


def anonymous_log(ledger: httpx.Client, vkey: str | None = None) -> LogInfo:
    """The server's anonymous log, with its key pinned by `vkey` when given."""
    return _partition_log(ledger, "anonymous", vkey)


def _partition_log(http: httpx.Client, partition: str, vkey: str | None) -> LogInfo:
    for info in LedgerClient(str(http.base_url), client=http).logs():
        if info.partition == partition:
            if vkey is not None and vkey != info.vkey:
                raise ReportError(f"server reports key {info.vkey} for {info.name}, not {vkey}")
            return info
    raise ReportError(f"the server hosts no {partition} log")


def _checkpoint(http: httpx.Client, info: LogInfo) -> tuple[Checkpoint, bytes]:
    client = LedgerClient(str(http.base_url), client=http)
    return client.checkpoint(info.name, verifier_from_vkey(info.vkey), info.origin)


# -- anonymous ------------------------------------------------------------------------------------


def file_anonymous(
    ledger: httpx.Client,
    issuer: httpx.Client,
    fields: ReportFields,
    *,
    vkey: str | None = None,
    clock: Callable[[], float] = time.time,
) -> AnonymousReceipt:
    """Steps 1-6 of the module docstring. `ledger` and `issuer` are separate HTTP clients (no
    shared cookies or connections) whose base URLs are the ledger and the issuer."""
    info = anonymous_log(ledger, vkey)
    verifier = verifier_from_vkey(info.vkey)
    seen, _ = _checkpoint(ledger, info)  # (1)
    hour = int(clock()) // HOUR * HOUR
    predicate = build_report(fields, seen, hour)
    env = sign_one_time(statement_bytes(Statement.of(predicate)))  # (2)
    path = f"/logs/{info.name}/entries"
    first = _post(ledger, path, env, None)  # (3)
    if first.status_code != 401:
        raise ReportError(f"the log did not ask for a token: {_describe(first)}")
    challenges = pp.parse_www_authenticate(first.headers.get("www-authenticate", ""))
    directory = issuer_directory(issuer)
    chosen = choose_challenge(challenges, directory)  # (4)
    token = fetch_token(issuer, directory, chosen)  # (5)
    second = _post(ledger, path, env, pp.authorization(token))  # (6)
    if second.status_code != 202:
        raise ReportError(f"the log refused the report: {_describe(second)}")
    return _check_receipt(second.json(), env, info, verifier)


def _post(http: httpx.Client, path: str, env: Envelope, auth: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth
    try:
        return http.post(path, content=env.canonical_bytes(), headers=headers)
    except httpx.HTTPError as e:
        raise ReportError(f"POST {path}: {e}") from e


@dataclass(frozen=True)
class IssuerDirectory:
    """An issuer's directory (RFC 9578 §4): where to send token requests, and its token keys
    of type 0x0002 (SPKI DER), preferred first."""

    request_uri: str
    token_keys: tuple[bytes, ...]


def issuer_directory(issuer: httpx.Client) -> IssuerDirectory:
    """Fetch and parse the directory of the issuer at `issuer`'s base URL.

    The request URI is resolved against the directory's URL and must stay on the issuer's own
    origin: a token request goes to the issuer the reporter chose, nowhere else.
    """
    base = str(issuer.base_url).rstrip("/")
    r = _get(issuer, DIRECTORY_PATH)
    try:
        body = r.json()
        uri = body["issuer-request-uri"]
        keys = tuple(
            _b64url(str(k["token-key"]))
            for k in body["token-keys"]
            if k.get("token-type") == pp.TOKEN_TYPE
        )
        if not isinstance(uri, str):
            raise TypeError("issuer-request-uri is not a string")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ReportError(f"the issuer directory is malformed: {e}") from e
    absolute = httpx.URL(urljoin(base + DIRECTORY_PATH, uri))
    if (absolute.scheme, absolute.host, absolute.port) != (
        issuer.base_url.scheme,
        issuer.base_url.host,
        issuer.base_url.port,
    ):
        raise ReportError(f"the issuer-request-uri {uri!r} points away from the issuer")
    return IssuerDirectory(str(absolute), keys)


def choose_challenge(
    challenges: list[pp.PrivateTokenChallenge], directory: IssuerDirectory
) -> pp.PrivateTokenChallenge:
    """The log's challenge for the issuer's most preferred key that the log also accepts."""
    by_key = {pp.token_key_bytes(c.token_key): c for c in challenges if c.token_key is not None}
    for spki in directory.token_keys:
        if spki in by_key:
            return by_key[spki]
    raise ReportError(
        f"none of the {len(by_key)} token key(s) the log accepts is in the issuer's directory "
        f"({len(directory.token_keys)} key(s)): is --issuer the issuer this ledger trusts?"
    )


def fetch_token(
    issuer: httpx.Client, directory: IssuerDirectory, chosen: pp.PrivateTokenChallenge
) -> pp.Token:
    """Run RFC 9578 issuance with `issuer` for `chosen` (which must carry its token key)."""
    if chosen.token_key is None:
        raise ReportError("the chosen challenge has no token key")
    request, state = pp.begin_issuance(chosen.token_key, chosen.challenge)
    try:
        r = issuer.post(
            directory.request_uri,
            content=request.encode(),
            headers={"Content-Type": REQUEST_MEDIA_TYPE, "Accept": RESPONSE_MEDIA_TYPE},
        )
    except httpx.HTTPError as e:
        raise ReportError(f"POST {directory.request_uri}: {e}") from e
    if r.status_code != 200:
        retry = r.headers.get("retry-after")
        hint = f" (retry after {retry} s)" if retry else ""
        raise ReportError(f"the issuer refused a token: {_describe(r)}{hint}")
    try:
        return pp.finalize_issuance(state, pp.TokenResponse.decode(r.content))
    except pp.PrivacyPassError as e:
        raise ReportError(f"the issuer's token response is invalid: {e.diagnostic}") from e


def _check_receipt(
    body: dict[str, Any], env: Envelope, info: LogInfo, verifier: NoteVerifier
) -> AnonymousReceipt:
    """The receipt verifies with the log's key and promises this envelope's leaf."""
    want = merkle.leaf_hash(env.canonical_bytes())
    try:
        note = str(body["receipt"])
        receipt = open_receipt(note, verifier)
    except (KeyError, NoteError) as e:
        raise VerificationError(f"receipt: {getattr(e, 'diagnostic', e)}") from e
    if receipt.origin != info.origin or receipt.leaf_hash != want:
        raise VerificationError(
            f"receipt is for {receipt.origin} leaf {base64.b64encode(receipt.leaf_hash).decode()},"
            f" want {info.origin} leaf {base64.b64encode(want).decode()}"
        )
    return AnonymousReceipt(env, want, receipt, note)


def wait_for_inclusion(
    ledger: httpx.Client,
    leaf_hash: bytes,
    *,
    vkey: str | None = None,
    deadline: float,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Inclusion:
    """Poll until the entry with `leaf_hash` is in a checkpoint, then verify its inclusion.

    Plan, per poll: (1) fetch the latest checkpoint, verified with the log's key; (2) ask for
    the inclusion proof by leaf hash at exactly that size (404: not integrated yet, poll again);
    (3) verify the proof against that checkpoint's root (RFC 9162 §2.1.3.2). `ReportError` when
    `deadline` (Unix seconds) passes first.
    """
    info = anonymous_log(ledger, vkey)
    delay = 0.1
    while True:
        cp, note = _checkpoint(ledger, info)  # (1)
        if cp.size > 0:
            r = _get_proof(ledger, info, leaf_hash, cp.size)  # (2)
            if r is not None:
                index, hashes = r
                try:
                    merkle.verify_inclusion(leaf_hash, index, cp.size, hashes, cp.root_hash)  # (3)
                except merkle.ProofError as e:
                    raise VerificationError(f"inclusion proof: {e.diagnostic}") from e
                proof = format_tlog_proof(TlogProof(index, tuple(hashes), note))
                return Inclusion(index, cp, proof)
        if clock() > deadline:
            raise ReportError(f"the entry is not in the log by {int(deadline)}; keep the receipt")
        sleep(delay)
        delay = min(delay * 2, 2.0)


def _get_proof(
    http: httpx.Client, info: LogInfo, leaf_hash: bytes, size: int
) -> tuple[int, list[bytes]] | None:
    path = f"/logs/{info.name}/proof/inclusion-by-hash"
    params: dict[str, str | int] = {
        "leaf_hash": base64.b64encode(leaf_hash).decode(),
        "size": size,
    }
    try:
        r = http.get(path, params=params)
    except httpx.HTTPError as e:
        raise ReportError(f"GET {path}: {e}") from e
    if r.status_code == 404:
        return None
    if r.status_code != 200:
        raise ReportError(f"GET {path}: {_describe(r)}")
    try:
        body = r.json()
        if int(body["size"]) != size:
            raise VerificationError(f"proof is for size {body['size']}, asked for {size}")
        return int(body["index"]), [
            base64.b64decode(h, validate=True) for h in body["inclusion_proof"]
        ]
    except (ValueError, KeyError, TypeError) as e:
        raise VerificationError(f"malformed inclusion proof: {e}") from e


# -- attested -------------------------------------------------------------------------------------


def file_attested(
    ledger: httpx.Client,
    fields: ReportFields,
    credential_tier: str,
    signer: tuple[str, Ed25519PrivateKey],
    *,
    vkey: str | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[int, str]:
    """Sign the report with the holder's key, submit it to the attested log, verify the proof.

    Returns (index, tlog-proof).
    """
    info = _partition_log(ledger, "attested", vkey)
    client = LedgerClient(str(ledger.base_url), client=ledger)
    verifier = verifier_from_vkey(info.vkey)
    seen, _ = client.checkpoint(info.name, verifier, info.origin)
    predicate = build_report(fields, seen, int(clock()), credential_tier)
    env = sign_statement(predicate, [signer])
    res = client.submit(info.name, env, verifier, info.origin)
    return res.index, res.tlog_proof


# -- helpers --------------------------------------------------------------------------------------


def _get(http: httpx.Client, path: str) -> httpx.Response:
    try:
        r = http.get(path)
    except httpx.HTTPError as e:
        raise ReportError(f"GET {path}: {e}") from e
    if r.status_code != 200:
        raise ReportError(f"GET {path}: {_describe(r)}")
    return r


def _describe(r: httpx.Response) -> str:
    try:
        body = r.json()
        return f"HTTP {r.status_code}: {body.get('error')}: {body.get('detail')}"
    except ValueError:
        return f"HTTP {r.status_code}: {r.text[:200]}"


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _first_line(text: str) -> str:
    return " ".join(text.split())[:300]


def http_client(base_url: str, timeout: float = 60.0) -> httpx.Client:
    """A client for one party: its own connection pool, no cookies kept, a constant User-Agent."""
    return httpx.Client(
        base_url=base_url.rstrip("/"),
        timeout=timeout,
        headers={"User-Agent": USER_AGENT},
        follow_redirects=False,
    )


# -- the command ----------------------------------------------------------------------------------


@click.command()
@click.option("--ledger", required=True, help="Server URL, e.g. http://127.0.0.1:8080")
@click.option("--model", required=True, help="The model's name as users see it.")
@click.option("--model-version", default=DEFAULT_MODEL_VERSION, show_default=True)
@click.option("--category", required=True, help="Behaviour category, e.g. self-harm.")
@click.option("--anonymous", is_flag=True, help="File anonymously, with a Privacy Pass token.")
@click.option("--issuer", "issuer_url", help="The token issuer's URL (with --anonymous).")
@click.option("--credential-tier", help="File attested, under this professional tier.")
@click.option(
    "--key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The credential holder's Ed25519 key (with --credential-tier).",
)
@click.option("--key-name", help="The holder key's name (default: the file stem).")
@click.option("--vkey", help="Pin the log's verifier key (default: trust what the server says).")
@click.option("--wait", is_flag=True, help="Anonymous: wait for the inclusion proof.")
@click.option(
    "--wait-timeout",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds past the receipt's deadline to keep waiting.",
)
@click.argument("text")
def report(
    ledger: str,
    model: str,
    model_version: str,
    category: str,
    anonymous: bool,
    issuer_url: str | None,
    credential_tier: str | None,
    key: Path | None,
    key_name: str | None,
    vkey: str | None,
    wait: bool,
    wait_timeout: float,
    text: str,
) -> None:
    """File a field report TEXT about MODEL's behaviour in CATEGORY.

    Either --anonymous --issuer URL (no key, no identity: a one-time key and a blind token), or
    --credential-tier TIER --key HOLDER_KEY (signed by a key that k-of-n issuers vouch for).
    """
    fields = ReportFields(model, model_version, category, text)
    try:
        if anonymous:
            if issuer_url is None or credential_tier is not None or key is not None:
                raise click.UsageError("--anonymous needs --issuer, and takes no --key or tier")
            _report_anonymous(ledger, issuer_url, fields, vkey, wait, wait_timeout)
        else:
            if credential_tier is None or key is None or issuer_url is not None:
                raise click.UsageError(
                    "give either --anonymous --issuer URL, or --credential-tier TIER --key KEY"
                )
            name = key_name or key.name.removesuffix(".pem")
            with http_client(ledger) as http:
                index, proof = file_attested(
                    http, fields, credential_tier, (name, load_private_key(key)), vkey=vkey
                )
            click.echo(f"included at index {index} of the attested log; proof verified", err=True)
            sys.stdout.write(proof)
    except (ClientError, AttestError) as e:
        raise click.ClickException(e.diagnostic) from e


def _report_anonymous(
    ledger: str,
    issuer_url: str,
    fields: ReportFields,
    vkey: str | None,
    wait: bool,
    wait_timeout: float,
) -> None:
    with http_client(ledger) as lhttp, http_client(issuer_url) as ihttp:
        got = file_anonymous(lhttp, ihttp, fields, vkey=vkey)
        leaf = base64.b64encode(got.leaf_hash).decode()
        click.echo(
            f"accepted: leaf {leaf}, to be included by {got.receipt.integrate_by}; receipt:",
            err=True,
        )
        sys.stdout.write(got.note)
        if wait:
            inc = wait_for_inclusion(
                lhttp, got.leaf_hash, vkey=vkey, deadline=got.receipt.integrate_by + wait_timeout
            )
            click.echo(
                f"included at index {inc.index}; proof verified against tree size "
                f"{inc.checkpoint.size}",
                err=True,
            )
            sys.stdout.write("\n" + inc.tlog_proof)


if __name__ == "__main__":
    report()
