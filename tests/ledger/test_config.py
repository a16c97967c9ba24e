"""The data directory's config decides the database once DATA exists; a `--db` that names
another one is an error, never silently ignored."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from clients.cli import main
from ledger.config import ConfigError, init_data_dir

PREFIX = "config.test/logs"


def test_an_existing_data_dir_with_another_db_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = init_data_dir(data, origin_prefix=PREFIX)
    assert first.db == f"sqlite:///{(data / 'ledger.db').resolve()}"
    # The same URL, or none, loads the config as before.
    assert init_data_dir(data, origin_prefix=PREFIX, db=first.db).db == first.db
    assert init_data_dir(data, origin_prefix=PREFIX).db == first.db
    other = f"sqlite:///{(tmp_path / 'other.db').resolve()}"
    with pytest.raises(ConfigError) as e:
        init_data_dir(data, origin_prefix=PREFIX, db=other)
    assert "config.toml" in str(e.value) and other in str(e.value) and first.db in str(e.value)
    assert not (tmp_path / "other.db").exists()


def test_serve_says_so_and_exits_1(tmp_path: Path) -> None:
    data = tmp_path / "data"
    init_data_dir(data, origin_prefix=PREFIX)
    other = f"sqlite:///{(tmp_path / 'other.db').resolve()}"
    res = CliRunner().invoke(
        main, ["serve", "--data", str(data), "--port", "0", "--db", other], catch_exceptions=False
    )
    assert res.exit_code == 1, res.output
    assert "not --db" in res.output and other in res.output
    assert not (tmp_path / "other.db").exists()


def test_a_lab_key_another_frontend_registered_first_is_not_an_error(tmp_path: Path) -> None:
    """Two hosts on one database, both started with the same --allow-lab: the one whose own
    check ran before the other's registration was sequenced finds its registration refused
    (a key is registered once) and the key active; it starts, and the log holds one
    registration."""
    from attest.admission import parse_envelope
    from attest.keys import generate_private_key, write_key_pair
    from attest.statement import parse_statement
    from ledger.admission import EvidenceRule
    from ledger.config import load_config
    from ledger.server import LedgerServer, lab_vkey, register_lab

    data = tmp_path / "data"
    init_data_dir(data, origin_prefix=PREFIX)
    write_key_pair(tmp_path / "lab.pem", generate_private_key())
    lab = str(tmp_path / "lab.pem.pub")
    operator = load_config(data).logs[0].operator_key
    assert operator is not None
    from attest.keys import load_private_key

    a = LedgerServer.from_config(load_config(data))
    b = LedgerServer.from_config(load_config(data))  # loaded before a registers the key
    ev_a, ev_b = a.logs["evidence"], b.logs["evidence"]
    assert isinstance(ev_a.rule, EvidenceRule) and isinstance(ev_b.rule, EvidenceRule)
    key = load_private_key(operator)
    register_lab(ev_a, ev_a.rule, lab_vkey(lab), key)
    register_lab(ev_b, ev_b.rule, lab_vkey(lab), key)  # refused by the chain, key active: fine
    head = ev_b.log.head()
    events = [
        parse_statement(parse_envelope(ev_b.log.entry(i)).payload).predicate
        for i in range(head.size)
    ]
    registrations = [e for e in events if getattr(e, "role", None) == "lab"]
    assert len(registrations) == 1, events
