"""`bledger verify` (run an audit node) and `bledger verify-evidence` (check evidence offline).

    bledger verify --data DIR                          first run: create DIR (config, node key)
    bledger verify --data DIR --follow URL --log NAME  follow a log, pinning the keys it reports
    bledger verify --data DIR --once                   one audit + gossip round (for cron)
    bledger verify --data DIR [--poll S] [--host H --port P] [--peer URL ...]
                                                       run: audit every S seconds, serve gossip
    bledger verify-evidence FILE --log-vkey VKEY       check an evidence record offline

`--once` exits 0 when every log verified, 1 when a log could not be reached, and 2 with an
`ALARM` line per record when the node holds any evidence of misbehaviour. A running node starts a
round at once on SIGUSR1.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import httpx

from clients.serve_options import limit_options
from verifier.errors import VerifierError

if TYPE_CHECKING:
    from ledger.serving import Limits
    from verifier.auditor import AuditNode

EXIT_UNAVAILABLE = 1
EXIT_ALARM = 2


def _fail(e: VerifierError) -> click.ClickException:
    return click.ClickException(e.diagnostic)


@click.command("verify")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Data directory.")
@click.option("--once", is_flag=True, help="Run one audit + gossip round and exit (for cron).")
@click.option("--poll", type=float, help="Seconds between rounds (default: the config's).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Gossip server address.")
@click.option("--port", default=8090, show_default=True, type=int, help="Gossip server port.")
@click.option("--peer", "peers", multiple=True, help="Another audit node's URL (repeatable).")
@click.option("--follow", metavar="URL", help="Follow a log of the ledger server at URL.")
@click.option("--log", "log_name", default="evidence", show_default=True, help="With --follow.")
@click.option(
    "--allow-key",
    "allow_keys",
    multiple=True,
    metavar="VKEY",
    help="With --follow: a key the log admits directly (its --allow-key), as a vkey.",
)
@click.option(
    "--witness", "witnesses", multiple=True, metavar="URL", help="With --follow: push to it."
)
@click.option(
    "--policy",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --follow: the witness policy file (C2SP tlog-policy).",
)
@click.option(
    "--tiles",
    "tiles_url",
    metavar="URL",
    help="With --follow: read the log's checkpoint, tiles and bundles from this static URL "
    "(where the log publishes with `serve --tiles`) instead of its server.",
)
@click.option(
    "--full",
    is_flag=True,
    help="Re-read and re-hash every entry bundle verified before, at every step (default: "
    "the config's recheck_bundles per step).",
)
@click.option(
    "--audit-workers",
    type=click.IntRange(min=1),
    help="Processes that check signatures when a step catches up on many entries (default: "
    "one per core; 1 checks every entry in this process).",
)
@limit_options
def verify(
    data: Path,
    once: bool,
    poll: float | None,
    host: str,
    port: int,
    peers: tuple[str, ...],
    follow: str | None,
    log_name: str,
    allow_keys: tuple[str, ...],
    witnesses: tuple[str, ...],
    policy: Path | None,
    tiles_url: str | None,
    full: bool,
    audit_workers: int | None,
    limits: Limits,
) -> None:
    """Run an audit node over DATA: verify every checkpoint, tile and entry of the logs it
    follows, cosign what it verified, push it to witnesses, and gossip with peers."""
    from verifier.auditor import AuditNode, init_node_dir

    fresh = not (data / "config.toml").exists()
    try:
        cfg = init_node_dir(data)
    except VerifierError as e:
        raise _fail(e) from e
    if fresh:
        click.echo(f"created {data}: node {cfg.name}")
    click.echo(f"node vkey {(data / 'auditor.vkey').read_text().strip()}")
    if follow is not None:
        _follow(data, follow, log_name, allow_keys, witnesses, policy, tiles_url)
        return
    if not cfg.logs:
        click.echo("no log followed yet: add one with --follow URL --log NAME", err=True)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        node = AuditNode.open(data, full=full, workers=audit_workers)
    except VerifierError as e:
        raise _fail(e) from e
    checker = node.checker
    click.echo(
        "signature checks when catching up: "
        + (f"{checker.workers} worker processes" if checker else "in this process")
    )
    _show_catch_up(node)
    all_peers = [*cfg.peers, *peers]
    if once:
        sys.exit(_run_once(node, all_peers))
    _serve(node, all_peers, poll if poll is not None else cfg.poll_seconds, host, port, limits)


def _show_catch_up(node: AuditNode) -> None:
    """A progress bar on stderr per followed log while the node fetches entry bundles (catching
    up on a large log takes minutes): the bar's total is the entries the latest checkpoint adds
    to what the node had verified. Reads the node's HTTP traffic only (response hooks)."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    for origin, followed in node.logs.items():
        bars: dict[str, Any] = {}

        def on_response(
            r: httpx.Response, origin: str = origin, bars: dict[str, Any] = bars
        ) -> None:
            path = r.request.url.path
            if r.status_code != 200:
                return
            if path.endswith("/checkpoint"):
                if "bar" in bars:
                    bars.pop("bar").close()
                lines = r.read().decode(errors="replace").split("\n")
                head = node.state.head(origin)
                old = 0 if head is None else head.size
                size = int(lines[1]) if len(lines) > 1 and lines[1].isdigit() else old
                if size - old >= 256:  # a few bundles or more: worth a bar
                    bars["bar"] = tqdm(
                        total=size - old, unit="entry", desc=f"auditing {origin}", file=sys.stderr
                    )
            elif "/tile/entries/" in path and "bar" in bars:
                bar = bars["bar"]
                width = int(path.rsplit(".p/", 1)[1]) if ".p/" in path else 256
                bar.update(min(width, bar.total - bar.n))
                if bar.n >= bar.total:
                    bars.pop("bar").close()

        followed.http.event_hooks["response"].append(on_response)
        if followed.tiles is not followed.http:
            followed.tiles.event_hooks["response"].append(on_response)


def _follow(
    data: Path,
    url: str,
    name: str,
    allow_keys: tuple[str, ...],
    witnesses: tuple[str, ...],
    policy: Path | None,
    tiles_url: str | None = None,
) -> None:
    from dataclasses import replace

    from verifier.auditor import follow_log, load_node_config, save_logs

    try:
        fl = follow_log(data, url, name)
        fl = replace(
            fl,
            allowed_keys=tuple(dict.fromkeys((*fl.allowed_keys, *allow_keys))),
            witnesses=tuple(dict.fromkeys((*fl.witnesses, *(w.rstrip("/") for w in witnesses)))),
            witness_policy=policy.read_text() if policy is not None else fl.witness_policy,
            tiles_url=tiles_url.rstrip("/") if tiles_url else fl.tiles_url,
        )
        fl.policy()  # refuse a bad policy before writing it
        logs = [lg for lg in load_node_config(data).logs if lg.origin != fl.origin]
        save_logs(data, [*logs, fl])
    except VerifierError as e:
        raise _fail(e) from e
    click.echo(f"following {fl.name} at {fl.url}")
    if fl.tiles_url:
        click.echo(f"  tiles from {fl.tiles_url}")
    click.echo(f"  partition {fl.partition}")
    click.echo(f"  origin   {fl.origin}")
    click.echo(f"  vkey     {fl.vkey}")
    click.echo(f"  operator {fl.operator_vkey}")
    for k in fl.allowed_keys:
        click.echo(f"  allowed  {k}")
    for w in fl.witnesses:
        click.echo(f"  witness  {w}")
    click.echo("compare these keys with what the log's operator publishes", err=True)
    if fl.partition == "attested" and not any(
        lg.partition == "evidence" and lg.url == fl.url for lg in logs
    ):
        click.echo(
            f"warning: follow the evidence log of {fl.url} too, or the node cannot check the "
            "attested entries' signatures and credentials",
            err=True,
        )


def _run_once(node: AuditNode, peers: list[str]) -> int:
    """One round; print a line per log and an ALARM line per evidence record; the exit code."""
    from verifier.auditor import StepResult
    from verifier.gossip import NodeLoop

    loop = NodeLoop(node, peers, poll=0)
    try:
        report = loop.run_round()
    finally:
        loop.stop()
        node.close()
    unavailable = False
    for origin, res in report.audits.items():
        if isinstance(res, StepResult):
            witnessed = "witnessed" if res.witnessed else "NOT witnessed"
            click.echo(f"ok {origin} size {res.size} (+{res.new_entries} entries), {witnessed}")
            for w in res.warnings:
                click.echo(f"  warning: {w}", err=True)
        else:
            unavailable = True
            click.echo(f"FAILED {origin}: {res.diagnostic}", err=True)
    for problem in report.gossip:
        click.echo(f"gossip: {problem}", err=True)
    evidence = node.evidence()
    for ev in evidence:
        click.echo(f"ALARM {ev.origin}: {ev.kind}: {ev.reason}")
    if evidence:
        click.echo(f"ALARM: {len(evidence)} evidence record(s); see GET /evidence or the state db")
        return EXIT_ALARM
    return EXIT_UNAVAILABLE if unavailable else 0


def _serve(
    node: AuditNode, peers: list[str], poll: float, host: str, port: int, limits: Limits
) -> None:
    """Serve gossip with the same hardened server as `bledger serve` (`ledger.serving`: the port
    is bound before anything says "serving", header timeouts, per-client caps)."""
    from ledger.serving import ServeError, bind
    from ledger.serving import serve as serve_app
    from verifier.gossip import NodeLoop, create_gossip_app

    try:
        sock = bind(host, port)
    except ServeError as e:
        node.close()
        raise click.ClickException(e.diagnostic) from e
    loop = NodeLoop(node, peers, poll)
    # SIGUSR1: start a round now (uvicorn handles only SIGINT and SIGTERM).
    signal.signal(signal.SIGUSR1, lambda *_: loop.wake())
    click.echo(f"node {node.cosigner.name} serving gossip on http://{host}:{port}", err=True)
    try:
        serve_app(create_gossip_app(node, loop), sock, limits)
    finally:
        node.close()


@click.command("verify-evidence")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--log-vkey", required=True, help="The log's verifier key (pinned out of band).")
def verify_evidence(file: Path, log_vkey: str) -> None:
    """Check an evidence record offline with the log's key; print what it proves."""
    from verifier.gossip import verify_evidence as check

    try:
        click.echo(check(file.read_bytes(), log_vkey))
    except VerifierError as e:
        raise _fail(e) from e


@click.group()
def _main() -> None:
    """Both commands, runnable as `python -m clients.verify_cmd` until wired into `bledger`."""


_main.add_command(verify)
_main.add_command(verify_evidence)

if __name__ == "__main__":
    _main()
