"""Probe jobs in PostgreSQL: enqueued once, claimed by any number of workers, completed once.

A job is one (model, version, suite, category, tier) cell. Workers claim jobs with
``SELECT ... FOR UPDATE SKIP LOCKED`` (no two workers ever wait on, or take, the same row) and
hold them under a *lease*: a random token and an expiry time. Decisions a caller must know:

* **Leases expire.** A worker that dies (``kill -9``, power loss) stops heartbeating; once its
  lease is older than `lease_seconds` any worker may reclaim the job with a new token. Expiry is
  judged by the *database's* clock (``clock_timestamp()``), so workers' clocks do not matter.
* **Completion is compare-and-set on the token.** A worker completes (or releases) a job only if
  the row still carries its token; a worker whose lease expired and was reclaimed gets
  `LeaseLostError` and its result is not recorded, so a job is completed exactly once. (It may
  still have *submitted* records to the log: they are valid, signed entries under their own run
  id, and the probing worker's resumable run directory makes the reclaiming worker on the same
  machine resubmit the same envelopes, which the log deduplicates.)
* **Attempts are bounded.** A job whose lease has expired `max_attempts` times is marked
  ``failed`` rather than handed out again, so one job that kills its workers cannot loop forever.
* **Own tables.** ``probe_jobs`` and ``probe_job_events`` (an append-only audit trail of
  claims, completions, releases and lost leases) live on their own SQLAlchemy MetaData, created
  with `ProbeQueue.create`; they are not part of the ledger's Alembic schema.

PostgreSQL only: SQLite has no ``SKIP LOCKED`` and no row locks.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    and_,
    create_engine,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from attest.errors import AttestError

__all__ = [
    "STATUSES",
    "Job",
    "JobOutcome",
    "JobSpec",
    "Lease",
    "LeaseLostError",
    "ProbeQueue",
    "QueueError",
    "WorkSummary",
    "job_specs",
    "metadata",
    "work",
]

STATUSES: Final = ("queued", "running", "done", "failed")
"""A job's states: ``queued`` → ``running`` (leased) → ``done`` | ``failed`` (or back)."""

metadata = MetaData()
"""The queue's own tables (not the ledger's Alembic-managed schema)."""

probe_jobs = Table(
    "probe_jobs",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("model", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("suite", Text, nullable=False),
    Column("category", Text, nullable=False),
    Column("tier", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="queued"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_token", Text),
    Column("lease_owner", Text),
    Column("lease_expires", DateTime(timezone=True)),
    Column("run_id", Text),
    Column("record_indices", JSON),
    Column("completed_by", Text),
    Column("completed_at", DateTime(timezone=True)),
    Column("error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("model", "version", "suite", "category", "tier", name="probe_jobs_cell"),
    CheckConstraint(f"status IN {STATUSES!r}", name="probe_jobs_status"),
    Index("probe_jobs_claimable", "status", "id"),
)

probe_job_events = Table(
    "probe_job_events",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("job_id", BigInteger, ForeignKey("probe_jobs.id"), nullable=False, index=True),
    Column("event", Text, nullable=False),
    Column("worker", Text),
    Column("token", Text),
    Column("detail", Text),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.clock_timestamp()),
)


class QueueError(AttestError):
    """The queue database is unreachable, not PostgreSQL, or refused an operation."""


class LeaseLostError(QueueError):
    """The job no longer carries this worker's lease token: it expired and was reclaimed.

    Nothing was recorded for the job by the call that raised this.
    """

    def __init__(self, job_id: int, worker: str) -> None:
        super().__init__(
            f"job {job_id}: worker {worker!r} lost its lease (it expired and another worker "
            "reclaimed the job, or the job was completed); its result was not recorded"
        )
        self.job_id = job_id


@dataclass(frozen=True)
class JobSpec:
    """What to probe: model spec and version label, suite name, one category, one tier."""

    model: str
    version: str
    suite: str
    category: str
    tier: str


@dataclass(frozen=True)
class Lease:
    """A claimed job: `token` proves this worker holds it; `attempt` counts from 1."""

    job_id: int
    token: str
    worker: str
    spec: JobSpec
    attempt: int


@dataclass(frozen=True)
class Job:
    """A job row as the queue reports it."""

    id: int
    spec: JobSpec
    status: str
    attempts: int
    lease_owner: str | None
    run_id: str | None
    record_indices: tuple[int, ...]
    completed_by: str | None
    error: str | None


@dataclass(frozen=True)
class JobOutcome:
    """What a finished job produced: its run id and the log indices of its records."""

    run_id: str
    record_indices: tuple[int, ...]


class ProbeQueue:
    """The job queue in the PostgreSQL database at `url` (a SQLAlchemy URL).

    `lease_seconds` is how long a claim or heartbeat holds a job; `max_attempts` how many leases
    a job may have before it is marked failed.
    """

    def __init__(
        self,
        url: str,
        *,
        lease_seconds: float = 300.0,
        max_attempts: int = 3,
        engine: Engine | None = None,
    ) -> None:
        if lease_seconds <= 0 or max_attempts < 1:
            raise ValueError("lease_seconds must be positive and max_attempts at least 1")
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.engine = engine or _engine(url)

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    def __enter__(self) -> ProbeQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as e:
            raise QueueError(f"probe queue: {type(e).__name__}: {str(e).splitlines()[0]}") from e

    def create(self) -> None:
        """Create the queue's tables if they do not exist (idempotent)."""
        with self._tx() as conn:
            metadata.create_all(conn)

    def enqueue(self, specs: Iterable[JobSpec]) -> list[int]:
        """Add jobs; a cell already queued (in any state) is left as it is. Returns every id."""
        ids: list[int] = []
        with self._tx() as conn:
            for spec in specs:
                values = _spec_values(spec)
                stmt = pg_insert(probe_jobs).values(**values).on_conflict_do_nothing()
                row = conn.execute(stmt.returning(probe_jobs.c.id)).first()
                if row is not None:
                    _event(conn, row[0], "enqueue")
                    ids.append(int(row[0]))
                else:
                    ids.append(
                        int(conn.execute(select(probe_jobs.c.id).where(_cell(spec))).one()[0])
                    )
        return ids

    def claim(self, worker: str) -> Lease | None:
        """Lease the oldest claimable job (queued, or running with an expired lease), or None.

        Plan, in one transaction:
        1. mark failed every running job whose lease expired on its last allowed attempt;
        2. lock the first claimable row, skipping rows other workers have locked;
        3. give it a fresh token, owner, expiry and attempt; log the claim.
        """
        now = func.clock_timestamp()
        with self._tx() as conn:
            exhausted = (  # (1)
                update(probe_jobs)
                .where(
                    probe_jobs.c.status == "running",
                    probe_jobs.c.lease_expires < now,
                    probe_jobs.c.attempts >= self.max_attempts,
                )
                .values(status="failed", lease_token=None, error="lease expired on last attempt")
                .returning(probe_jobs.c.id)
            )
            for (job_id,) in conn.execute(exhausted).all():
                _event(conn, job_id, "fail", worker, detail="lease expired on last attempt")
            row = conn.execute(  # (2)
                select(probe_jobs)
                .where(
                    or_(
                        probe_jobs.c.status == "queued",
                        and_(probe_jobs.c.status == "running", probe_jobs.c.lease_expires < now),
                    )
                )
                .order_by(probe_jobs.c.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return None
            token = secrets.token_hex(16)  # (3)
            reclaimed = row.status == "running"
            conn.execute(
                update(probe_jobs)
                .where(probe_jobs.c.id == row.id)
                .values(
                    status="running",
                    lease_token=token,
                    lease_owner=worker,
                    lease_expires=now + self._lease(),
                    attempts=probe_jobs.c.attempts + 1,
                )
            )
            detail = f"reclaimed from {row.lease_owner}" if reclaimed else None
            _event(conn, row.id, "claim", worker, token, detail)
            return Lease(int(row.id), token, worker, _spec(row), int(row.attempts) + 1)

    def heartbeat(self, lease: Lease) -> None:
        """Extend `lease` by `lease_seconds` from now; LeaseLostError if it is no longer held."""
        with self._tx() as conn:
            if not conn.execute(
                self._held(lease).values(lease_expires=func.clock_timestamp() + self._lease())
            ).first():
                raise LeaseLostError(lease.job_id, lease.worker)

    def complete(self, lease: Lease, outcome: JobOutcome) -> None:
        """Record `outcome` and mark the job done, only if `lease` still holds it.

        The compare-and-set on the lease token makes completion exactly-once: a worker whose
        lease was reclaimed gets LeaseLostError and changes nothing.
        """
        with self._tx() as conn:
            done = self._held(lease).values(
                status="done",
                lease_token=None,
                lease_expires=None,
                run_id=outcome.run_id,
                record_indices=list(outcome.record_indices),
                completed_by=lease.worker,
                completed_at=func.clock_timestamp(),
                error=None,
            )
            if not conn.execute(done).first():
                raise LeaseLostError(lease.job_id, lease.worker)
            detail = ",".join(str(i) for i in outcome.record_indices)
            _event(conn, lease.job_id, "complete", lease.worker, lease.token, detail)

    def release(self, lease: Lease, error: str, *, retry: bool = True) -> None:
        """Give the job back after an error: queued again (if attempts remain and `retry`) or
        failed. LeaseLostError if `lease` no longer holds it."""
        again = retry and lease.attempt < self.max_attempts
        with self._tx() as conn:
            stmt = self._held(lease).values(
                status="queued" if again else "failed",
                lease_token=None,
                lease_owner=None,
                lease_expires=None,
                error=error[:2000],
            )
            if not conn.execute(stmt).first():
                raise LeaseLostError(lease.job_id, lease.worker)
            _event(
                conn,
                lease.job_id,
                "release" if again else "fail",
                lease.worker,
                lease.token,
                error[:2000],
            )

    def jobs(self) -> list[Job]:
        """Every job, in id order."""
        with self._tx() as conn:
            rows = conn.execute(select(probe_jobs).order_by(probe_jobs.c.id)).all()
        return [_job(r) for r in rows]

    def events(self, job_id: int | None = None) -> list[tuple[int, str, str | None, str | None]]:
        """The audit trail as (job id, event, worker, detail), in order."""
        q = select(
            probe_job_events.c.job_id,
            probe_job_events.c.event,
            probe_job_events.c.worker,
            probe_job_events.c.detail,
        ).order_by(probe_job_events.c.id)
        if job_id is not None:
            q = q.where(probe_job_events.c.job_id == job_id)
        with self._tx() as conn:
            return [(int(r[0]), str(r[1]), r[2], r[3]) for r in conn.execute(q).all()]

    def unfinished(self) -> int:
        """How many jobs are queued or running (a worker told to stop when done waits for 0)."""
        with self._tx() as conn:
            q = select(func.count()).where(probe_jobs.c.status.in_(("queued", "running")))
            return int(conn.execute(q).scalar_one())

    def _lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)

    def _held(self, lease: Lease) -> Any:
        """An UPDATE of the job row that matches only while `lease` holds it (RETURNING id)."""
        return (
            update(probe_jobs)
            .where(
                probe_jobs.c.id == lease.job_id,
                probe_jobs.c.status == "running",
                probe_jobs.c.lease_token == lease.token,
            )
            .returning(probe_jobs.c.id)
        )


def _engine(url: str) -> Engine:
    try:
        u = make_url(url)
    except Exception as e:
        raise QueueError(f"bad database URL: {e}") from e
    if u.get_backend_name() != "postgresql":
        raise QueueError(
            f"the probe queue needs PostgreSQL (FOR UPDATE SKIP LOCKED), not {u.get_backend_name()}"
        )
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")  # the driver this project installs
    return create_engine(u, pool_pre_ping=True, pool_size=2, max_overflow=2)


def _spec_values(spec: JobSpec) -> dict[str, str]:
    return {
        "model": spec.model,
        "version": spec.version,
        "suite": spec.suite,
        "category": spec.category,
        "tier": spec.tier,
    }


def _cell(spec: JobSpec) -> Any:
    return and_(*(probe_jobs.c[k] == v for k, v in _spec_values(spec).items()))


def _spec(row: Any) -> JobSpec:
    return JobSpec(row.model, row.version, row.suite, row.category, row.tier)


def _job(row: Any) -> Job:
    return Job(
        id=int(row.id),
        spec=_spec(row),
        status=str(row.status),
        attempts=int(row.attempts),
        lease_owner=row.lease_owner,
        run_id=row.run_id,
        record_indices=tuple(int(i) for i in row.record_indices or ()),
        completed_by=row.completed_by,
        error=row.error,
    )


def _event(
    conn: Connection,
    job_id: int,
    event: str,
    worker: str | None = None,
    token: str | None = None,
    detail: str | None = None,
) -> None:
    conn.execute(
        insert(probe_job_events).values(
            job_id=job_id, event=event, worker=worker, token=token, detail=detail
        )
    )


# -- the worker loop --------------------------------------------------------------------------


class _Heartbeat:
    """Extends a lease every third of `lease_seconds` on a thread until stopped.

    `lost` is set when a heartbeat finds the lease gone; the job may check it to stop early.
    """

    def __init__(self, queue: ProbeQueue, lease: Lease) -> None:
        self.queue = queue
        self.lease = lease
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="probe-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.queue.lease_seconds / 3):
            try:
                self.queue.heartbeat(self.lease)
            except LeaseLostError:
                self.lost.set()
                return
            except QueueError:
                continue  # a database blip: try again; the lease has slack for two misses

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class WorkSummary:
    """What one worker loop did: jobs completed, jobs given back after errors, leases lost."""

    completed: list[int]
    released: list[int]
    lost: list[int]


RunJob = Callable[[Lease, threading.Event], JobOutcome]
"""Runs a leased job; the event is set if the lease is lost meanwhile (stop early if you can)."""


def work(
    queue: ProbeQueue,
    worker: str,
    run_job: RunJob,
    *,
    until_done: bool = True,
    poll_seconds: float = 1.0,
    max_jobs: int | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> WorkSummary:
    """Claim → run → complete, until no job is left (`until_done`) or forever.

    A job whose `run_job` raises is released (queued again while attempts remain); its error's
    `diagnostic` (or repr) is recorded. An interrupt (KeyboardInterrupt, SystemExit) releases
    the job for retry and propagates. With `until_done`, the loop ends when no job is queued or
    running; while jobs are running under other workers' leases it polls, so it can reclaim a
    job whose worker died.
    """
    summary = WorkSummary([], [], [])
    while max_jobs is None or len(summary.completed) < max_jobs:
        lease = queue.claim(worker)
        if lease is None:
            if until_done and queue.unfinished() == 0:
                break
            time.sleep(poll_seconds)
            continue
        log(f"job {lease.job_id} (attempt {lease.attempt}): {_describe(lease.spec)}")
        with _Heartbeat(queue, lease) as hb:
            try:
                outcome = run_job(lease, hb.lost)
            except Exception as e:
                _give_back(queue, lease, e, summary, log)
                continue
            except BaseException as e:
                _give_back(queue, lease, e, summary, log)
                raise
        try:
            queue.complete(lease, outcome)
        except LeaseLostError as e:
            log(e.diagnostic)
            summary.lost.append(lease.job_id)
            continue
        log(f"job {lease.job_id} done: records {list(outcome.record_indices)}")
        summary.completed.append(lease.job_id)
    return summary


def _give_back(
    queue: ProbeQueue,
    lease: Lease,
    e: BaseException,
    summary: WorkSummary,
    log: Callable[[str], None],
) -> None:
    error = str(getattr(e, "diagnostic", None) or repr(e))
    log(f"job {lease.job_id} failed: {error}")
    try:
        queue.release(lease, error)
        summary.released.append(lease.job_id)
    except LeaseLostError:
        summary.lost.append(lease.job_id)


def _describe(spec: JobSpec) -> str:
    return f"{spec.model}@{spec.version} {spec.suite} {spec.category}/{spec.tier}"


def job_specs(
    model: str, version: str, suite: str, cells: Sequence[tuple[str, str]]
) -> list[JobSpec]:
    """One JobSpec per (category, tier) cell."""
    return [JobSpec(model, version, suite, c, t) for c, t in cells]
