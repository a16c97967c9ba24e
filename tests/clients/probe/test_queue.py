"""The probe job queue on PostgreSQL: claims, leases, exactly-once completion, workers.

The first tests drive `ProbeQueue` directly with short leases; the last runs three `bledger probe
--queue` worker processes on the tiny model against a real ledger server and kills one of them
(``kill -9``) in the middle of a job.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from attest.keys import load_private_key
from attest.predicates import ProbeRecord
from attest.statement import parse_statement
from clients.probe.model import LoadedModel
from clients.probe.queue import (
    JobOutcome,
    JobSpec,
    Lease,
    LeaseLostError,
    ProbeQueue,
    QueueError,
    work,
)
from clients.probe.worker import ensure_calibration, read_entry
from clients.probe_cmd import probe as probe_cmd
from tests.support import PROJECT_ROOT, check_log, log_identity

pytestmark = pytest.mark.postgres

SPECS = [JobSpec("m", "v1", "core", c, "anonymous") for c in ("a", "b", "c")]


@pytest.fixture
def queue(pg_url: str) -> ProbeQueue:
    q = ProbeQueue(pg_url, lease_seconds=1.0, max_attempts=3)
    q.create()
    return q


def test_needs_postgresql() -> None:
    with pytest.raises(QueueError, match="PostgreSQL"):
        ProbeQueue("sqlite:///x.db")


def test_enqueue_is_idempotent(queue: ProbeQueue) -> None:
    ids = queue.enqueue(SPECS)
    assert queue.enqueue(SPECS) == ids
    queue.create()  # creating again changes nothing
    assert [j.status for j in queue.jobs()] == ["queued"] * 3


def test_claims_are_distinct_and_in_order(queue: ProbeQueue) -> None:
    ids = queue.enqueue(SPECS)
    leases = [queue.claim(f"w{i}") for i in range(4)]
    assert [lease.job_id for lease in leases if lease] == ids
    assert leases[3] is None, "nothing left to claim while the leases hold"


def test_concurrent_claims_never_share_a_job(queue: ProbeQueue) -> None:
    queue.enqueue([JobSpec("m", "v1", "core", f"c{i}", "anonymous") for i in range(20)])
    got: list[int] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while (lease := queue.claim(name)) is not None:
            with lock:
                got.append(lease.job_id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [j.id for j in queue.jobs()], "each job claimed exactly once"


def test_expired_lease_is_reclaimed_and_the_old_holder_cannot_complete(queue: ProbeQueue) -> None:
    [job_id] = queue.enqueue(SPECS[:1])
    first = queue.claim("dead")
    assert first is not None
    assert queue.claim("other") is None, "a live lease is not handed out"
    time.sleep(1.2)
    second = queue.claim("other")
    assert second is not None and second.job_id == job_id and second.attempt == 2
    with pytest.raises(LeaseLostError):
        queue.complete(first, JobOutcome("run-a", (1,)))
    with pytest.raises(LeaseLostError):
        queue.heartbeat(first)
    queue.complete(second, JobOutcome("run-b", (2, 3)))
    with pytest.raises(LeaseLostError):
        queue.complete(second, JobOutcome("run-b", (2, 3)))  # completing twice changes nothing
    [job] = queue.jobs()
    assert (job.status, job.completed_by, job.record_indices) == ("done", "other", (2, 3))
    events = [e for _, e, _, _ in queue.events(job_id)]
    assert events == ["enqueue", "claim", "claim", "complete"]


def test_heartbeat_keeps_the_lease(queue: ProbeQueue) -> None:
    queue.enqueue(SPECS[:1])
    lease = queue.claim("w")
    assert lease is not None
    for _ in range(3):
        time.sleep(0.5)
        queue.heartbeat(lease)
        assert queue.claim("thief") is None
    queue.complete(lease, JobOutcome("run", (0,)))


def test_release_retries_then_fails(queue: ProbeQueue) -> None:
    queue.enqueue(SPECS[:1])
    for attempt in (1, 2, 3):
        lease = queue.claim("w")
        assert lease is not None and lease.attempt == attempt
        queue.release(lease, f"boom {attempt}")
    [job] = queue.jobs()
    assert (job.status, job.error) == ("failed", "boom 3")
    assert queue.claim("w") is None


def test_expiry_on_the_last_attempt_fails_the_job(queue: ProbeQueue) -> None:
    queue.enqueue(SPECS[:1])
    for _ in range(3):
        assert queue.claim("dies") is not None
        time.sleep(1.1)
    assert queue.claim("w") is None
    [job] = queue.jobs()
    assert job.status == "failed" and "last attempt" in (job.error or "")


def test_work_loop_completes_releases_and_stops(queue: ProbeQueue) -> None:
    queue.enqueue(SPECS)

    def run(lease: Lease, lost: threading.Event) -> JobOutcome:
        if lease.spec.category == "b" and lease.attempt == 1:
            raise RuntimeError("transient")
        return JobOutcome(f"run-{lease.job_id}", (lease.job_id * 10,))

    summary = work(queue, "w", run, poll_seconds=0.05)
    assert len(summary.completed) == 3 and len(summary.released) == 1
    assert all(j.status == "done" for j in queue.jobs())


# -- three worker processes, one killed -------------------------------------------------------


def test_three_workers_one_killed_every_job_done_once(
    pg_url: str, tmp_path: Path, tiny_lm: LoadedModel
) -> None:
    """Three `bledger probe --queue` processes; w1 is killed (-9) holding a job. Every job is
    completed exactly once, its records are in the log, and the log holds no other records.

    Where inside the job the kill lands is left to timing; each crash point of a job is killed
    deterministically in test_worker.py::test_resume_after_a_crash."""
    from tests.clients.probe.support import MINI_SUITE, STIMULI, start_ledger

    suite = tmp_path / "mini-1.json"
    suite.write_text(json.dumps(MINI_SUITE))
    data = tmp_path / "probe-data"  # shared by the workers, as on one machine
    srv, target = start_ledger(tmp_path)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        worker = [("worker", load_private_key(tmp_path / "worker.pem"))]
        # Publish the tiny model's calibration up front: a quick one, found by every worker.
        ensure_calibration(tiny_lm, target, worker, data=data, stimuli=STIMULI)
        common = ["--queue", pg_url, "--model", "tiny", "--suite-file", str(suite)]
        res = CliRunner().invoke(probe_cmd, [*common, "--enqueue"])
        assert res.exit_code == 0, res.stderr
        queue = ProbeQueue(pg_url)
        assert [j.spec.suite for j in queue.jobs()] == ["mini@1"] * 3

        args = [*common, "--ledger", srv.base_url, "--vkey", target.vkey or ""]
        args += ["--key", str(tmp_path / "worker.pem"), "--data-dir", str(data), "--quiet"]
        args += ["--until-done", "--lease-seconds", "3", "--poll-seconds", "0.2"]
        args += ["--batch-size", "4", "--max-new-tokens", "24"]
        for name in ("w1", "w2", "w3"):
            with (tmp_path / f"{name}.stderr").open("wb") as err:
                procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "clients.probe_cmd", *args, "--worker-name", name],
                    cwd=PROJECT_ROOT,
                    stdout=subprocess.PIPE,
                    stderr=err,
                )
        victim = _wait_for_lease(queue, procs["w1"], "w1")
        procs["w1"].kill()  # kill -9, in the middle of the job
        procs["w1"].wait()
        completed: list[int] = []
        for name in ("w2", "w3"):
            out, _ = procs[name].communicate(timeout=WORKER_TIMEOUT)
            stderr = (tmp_path / f"{name}.stderr").read_text()
            assert procs[name].returncode == 0, stderr
            completed += json.loads(out)["completed"]

        jobs = queue.jobs()
        assert [j.status for j in jobs] == ["done"] * 3
        assert sorted(completed) == [j.id for j in jobs], "the survivors did all three jobs"
        for j in jobs:
            completions = [e for _, e, _, _ in queue.events(j.id) if e == "complete"]
            assert len(completions) == 1, f"job {j.id} completed {len(completions)} times"
        killed = next(j for j in jobs if j.id == victim)
        assert killed.completed_by in ("w2", "w3") and killed.attempts == 2
        details = [d for _, e, _, d in queue.events(victim) if e == "claim"]
        assert details[-1] == "reclaimed from w1"

        vkey, origin = log_identity(srv.base_url)
        size = check_log(srv.base_url, vkey, origin).size
        logged: dict[int, ProbeRecord] = {}
        for i in range(size):
            pred = parse_statement(read_entry(target, i)[0].payload).predicate
            if isinstance(pred, ProbeRecord):
                logged[i] = pred
        claimed = [i for j in jobs for i in j.record_indices]
        assert sorted(claimed) == sorted(logged), "every record is a job's, each exactly once"
        for j in jobs:
            for i in j.record_indices:
                assert (logged[i].category, logged[i].tier) == (j.spec.category, j.spec.tier)
        queue.close()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        srv.stop()


WORKER_TIMEOUT = 300  # a deadline for a hung worker, not a performance assertion


def _wait_for_lease(queue: ProbeQueue, proc: subprocess.Popen[bytes], worker: str) -> int:
    """The id of the first job `worker` holds a lease on (polled every 20 ms)."""
    deadline = time.monotonic() + WORKER_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{worker} exited early"
        for j in queue.jobs():
            if j.status == "running" and j.lease_owner == worker:
                return j.id
        time.sleep(0.02)
    raise AssertionError(f"{worker} never claimed a job")
