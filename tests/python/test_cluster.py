"""Scale-out on Apache DataFusion Ballista: `meshgate scheduler` and two `meshgate
executor` processes on loopback, and a gateway (the demo, on the demo's directory) whose
`engine.distributed` sends every query it can to them. Answers, statuses and policies
are the same as the demo server's, which runs everything itself; the masks computed on
the executors (with their own copy of the masking key) agree with the gateway's.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

import pyarrow as pa
import pytest

from cluster_helpers import (
    DEMO_QUERIES,
    FALLBACK,
    GATEWAY_LOG,
    cluster_runs,
    cpu_seconds,
    query,
    rows,
    start_cluster,
)
from conftest import DEMO_SCALE, start_server
from mesh_helpers import DEMO_SECRET_FILE, ServerProcess, free_port, hermetic_env
from policy_model import PERSONAS


@pytest.fixture(scope="module")
def cluster(demo, meshgate_bin, tmp_path_factory):
    work = tmp_path_factory.mktemp("cluster")
    # The executors read the demo's storage (local files) and mask with its key.
    executor_config = work / "executor.yaml"
    executor_config.write_text(f"masking:\n  key_file: {demo.mesh_dir / DEMO_SECRET_FILE}\n")
    # The scheduler says when it cancels a job.
    cluster = start_cluster(meshgate_bin, work, executor_config, scheduler_log="warn,ballista_scheduler=info")
    gateway = None
    try:
        gateway_config = work / "gateway.yaml"
        gateway_config.write_text(
            "engine:\n"
            # Four partitions on two executors of two slots: the setting at which
            # Ballista's recovery from a lost executor counted shuffle output twice
            # (see docs/cluster.md), whatever the machine's cores.
            "  target_partitions: 4\n"
            "  distributed:\n"
            f"    scheduler: 127.0.0.1:{cluster.scheduler_port}\n"
            "    min_scan_bytes: 0\n"
        )
        gateway = ServerProcess(
            [
                meshgate_bin, "demo", "--dir", demo.mesh_dir, "--scale", DEMO_SCALE, "--config", gateway_config,
                "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--pg-listen", "127.0.0.1:0", "--portal-listen", "127.0.0.1:0",
            ],
            name="distributed gateway", env={**hermetic_env(), "MESHGATE_LOG": GATEWAY_LOG},
        )
        gateway.start()
        cluster.gateway = gateway
        yield cluster
    finally:
        if gateway is not None:
            gateway.stop()
        cluster.stop()




@pytest.mark.parametrize("sql", DEMO_QUERIES)
def test_the_cluster_answers_as_the_gateway_alone(server, cluster, admin_token, sql):
    before = cluster_runs(cluster.gateway)
    distributed = query(cluster.gateway, admin_token, sql)
    local = query(server, admin_token, sql)
    assert distributed.schema.names == local.schema.names
    assert rows(distributed) == rows(local)
    assert distributed.num_rows > 0
    assert cluster_runs(cluster.gateway) > before, "the query did not run on the cluster"
    assert FALLBACK not in cluster.gateway.output(tail=1_000_000), "a job failed and ran in the gateway"


@pytest.mark.parametrize("persona", ["ana", "ben", "cara"])
def test_policies_travel_with_the_plan(server, cluster, mint, persona):
    """Row filters (ana: her region), hashed diagnosis codes computed on the executors
    (ben), and a product denied (cara: visits do not exist for her) answer as on the
    gateway alone."""
    token = mint(*PERSONAS[persona].mint_args())
    sql = "SELECT region, diagnosis_code, count(*) AS n FROM clinical.encounters.visits GROUP BY 1, 2"
    try:
        local = query(server, token, sql)
    except pa.ArrowException as refused_locally:
        with pytest.raises(type(refused_locally)) as refused:
            query(cluster.gateway, token, sql)
        assert str(refused.value).split(".")[0] == str(refused_locally).split(".")[0]
        return
    before = cluster_runs(cluster.gateway)
    assert rows(query(cluster.gateway, token, sql)) == rows(local)
    assert cluster_runs(cluster.gateway) > before, "the query did not run on the cluster"
    assert FALLBACK not in cluster.gateway.output(tail=1_000_000), "a job failed and ran in the gateway"


def test_tables_the_cluster_cannot_read_run_on_the_gateway(server, cluster, admin_token):
    """A Delta table (its files reached through stores of the gateway's own making) and
    the mesh's own tables run in the gateway, with the same answers."""
    for sql in ["SELECT count(*) AS n, sum(value) AS total FROM clinical.labs.results",
                "SELECT domain, product FROM mesh.meta.products"]:
        assert rows(query(cluster.gateway, admin_token, sql)) == rows(query(server, admin_token, sql))


def test_functions_bounded_in_the_gateway_keep_their_queries_there(server, cluster, admin_token):
    """`repeat` is bounded in the gateway's sessions (values within limits); an
    executor has DataFusion's own: a plan calling it runs in the gateway."""
    sql = "SELECT repeat(diagnosis_code, 3) AS r, count(*) AS n FROM clinical.encounters.visits GROUP BY 1"
    before = cluster_runs(cluster.gateway)
    assert rows(query(cluster.gateway, admin_token, sql)) == rows(query(server, admin_token, sql))
    assert cluster_runs(cluster.gateway) == before, "a bounded function ran on the cluster"


def test_scalar_subqueries_stay_in_the_gateway(server, cluster, admin_token):
    """Ballista cuts a stage between a scalar subquery and its uses (its executors
    cannot decode that): such a plan runs in the gateway."""
    sql = ("SELECT region, count(*) AS n FROM clinical.encounters.visits GROUP BY region "
           "HAVING count(*) > (SELECT count(*) / 10 FROM clinical.encounters.visits)")
    before = cluster_runs(cluster.gateway)
    assert rows(query(cluster.gateway, admin_token, sql)) == rows(query(server, admin_token, sql))
    assert cluster_runs(cluster.gateway) == before


def test_a_cluster_that_cannot_be_reached_costs_nothing_but_time(demo, meshgate_bin, server, admin_token,
                                                                 tmp_path):
    """A gateway whose scheduler is gone runs its queries itself: same answers."""
    config = tmp_path / "gateway.yaml"
    config.write_text(f"engine:\n  distributed:\n    scheduler: 127.0.0.1:{free_port()}\n    min_scan_bytes: 0\n")
    gateway = start_server(
        [
            meshgate_bin, "demo", "--dir", demo.mesh_dir, "--scale", DEMO_SCALE, "--config", config,
            "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--pg-listen", "127.0.0.1:0", "--portal-listen", "127.0.0.1:0",
        ],
        "gateway of a lost cluster",
    )
    try:
        for sql in DEMO_QUERIES[:3]:
            assert rows(query(gateway, admin_token, sql)) == rows(query(server, admin_token, sql))
    finally:
        gateway.stop()


def test_bad_sql_and_missing_tables_fail_as_on_the_gateway(cluster, admin_token):
    with pytest.raises(pa.ArrowInvalid) as bad:
        query(cluster.gateway, admin_token, "SELEC 1")
    assert "Expected" in str(bad.value)
    with pytest.raises(pa.ArrowKeyError):
        query(cluster.gateway, admin_token, "SELECT * FROM clinical.nowhere.nothing")


# Three joins on a column of few values: rows beyond counting, made by the joins from
# every batch they read.
ENDLESS_JOIN = ("SELECT count(*) AS n FROM clinical.encounters.visits a "
                "JOIN clinical.encounters.visits b ON a.region = b.region "
                "JOIN clinical.encounters.visits c ON b.region = c.region")


def stopped_at_its_deadline(server, token: str) -> None:
    """Runs ENDLESS_JOIN on `server` with a deadline of 3 s and checks that it ends
    with DEADLINE_EXCEEDED, soon."""
    started = time.monotonic()
    with pytest.raises(pa.ArrowException) as stopped:
        query(server, token, ENDLESS_JOIN, timeout="3s")
    elapsed = time.monotonic() - started
    assert "time limit" in str(stopped.value) or "deadline" in str(stopped.value).lower(), stopped.value
    assert elapsed < 15, f"the deadline of 3s ended the query after {elapsed:.1f}s"


def falls_idle(processes) -> bool:
    """Whether `processes` together use less than 0.3 s of CPU in some second of the
    next 20."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        busy = sum(cpu_seconds(p) for p in processes)
        time.sleep(1)
        if sum(cpu_seconds(p) for p in processes) - busy < 0.3:
            return True
    return False


def test_a_query_past_its_deadline_frees_the_gateways_cores(server, admin_token):
    """The joins hand out their rows in batches that an aggregate pulls in a loop; the
    query's task yields between them, so its deadline stops it there: the gateway's
    CPU falls idle, and it answers at once."""
    busy_before = cpu_seconds(server.proc)
    stopped_at_its_deadline(server, admin_token)
    assert cpu_seconds(server.proc) - busy_before > 0.5, "the gateway did not work"
    assert falls_idle([server.proc]), "the gateway kept working on a stopped query"
    assert rows(query(server, admin_token, "SELECT 1 AS one")) == Counter([(1,)])


def test_a_query_past_its_deadline_stops_its_job_on_the_cluster(cluster, admin_token):
    """The deadline reaches the cluster: a query that would run for minutes ends with
    DEADLINE_EXCEEDED at its time limit, the scheduler cancels its job, and the
    executors stop working on it (their CPU falls idle)."""
    before = cluster_runs(cluster.gateway)
    cancelled_before = cluster.log("scheduler").count("Job cancelled")
    busy_before = sum(cpu_seconds(e) for e in cluster.executors)
    stopped_at_its_deadline(cluster.gateway, admin_token)
    assert cluster_runs(cluster.gateway) > before, "the query did not run on the cluster"
    assert sum(cpu_seconds(e) for e in cluster.executors) - busy_before > 0.5, "the executors did not work"
    # The scheduler cancels the job; its tasks stop.
    cancelled = lambda: cluster.log("scheduler").count("Job cancelled") > cancelled_before  # noqa: E731
    deadline = time.monotonic() + 20
    while not cancelled() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cancelled(), "the scheduler never cancelled the job"
    assert falls_idle(cluster.executors), "the executors kept working on a cancelled job"
    assert FALLBACK not in cluster.gateway.output(tail=1_000_000)


# Last in the module: it kills an executor.
def test_an_executor_killed_mid_query_costs_a_clear_error_never_a_wrong_answer(server, cluster, admin_token):
    """A query running on both executors when one is killed (SIGKILL) ends whole or with
    a clear error, never short or wrong (a job Ballista had to roll back is stopped and
    the gateway answers it itself); the query retried runs on the surviving one."""
    sql = ("SELECT a.region, count(*) AS pairs FROM clinical.encounters.visits a "
           "JOIN clinical.encounters.visits b ON a.region = b.region "
           "WHERE a.encounter_id % 2 = 0 GROUP BY a.region")
    expected = rows(query(server, admin_token, sql))
    outcome: dict[str, object] = {}

    def run():
        try:
            # Room for the scheduler to notice the lost executor (its heartbeat timeout)
            # and for the gateway to answer the query itself after that.
            outcome["answer"] = query(cluster.gateway, admin_token, sql, timeout="75s")
        except pa.ArrowException as exc:
            outcome["error"] = exc

    before = cluster.jobs()
    scheduler_log_before = len(cluster.log("scheduler"))
    fallbacks_before = cluster.gateway.output(tail=1_000_000).count(FALLBACK)
    worker = threading.Thread(target=run)
    worker.start()
    # Killed once the job has written its first shuffle data on the executors.
    deadline = time.monotonic() + 30
    while not cluster.jobs() - before and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.is_alive(), "the query ended before the kill; it must be heavier"
    victim = cluster.executors[0]
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    worker.join(timeout=90)
    assert not worker.is_alive(), "the query neither ended nor failed"
    if "Roll back running job/stage" in cluster.log("scheduler")[scheduler_log_before:]:
        # Ballista rolled back a stage (where it could count output twice): the job was
        # stopped, and the gateway answered the query itself.
        assert "answer" in outcome, outcome.get("error")
        assert "re-ran part of the job" in cluster.log("scheduler")[scheduler_log_before:]
        assert cluster.gateway.output(tail=1_000_000).count(FALLBACK) > fallbacks_before
    if "answer" in outcome:
        assert rows(outcome["answer"]) == expected, "a wrong or short answer"
    else:
        message = str(outcome["error"])
        assert "cluster" in message or "time limit" in message or "deadline" in message.lower(), message
    retried = None
    for _ in range(30):
        try:
            retried = query(cluster.gateway, admin_token, sql, timeout="30s")
            break
        except pa.ArrowException:
            time.sleep(1)
    assert retried is not None, "no retry succeeded on the surviving executor"
    assert rows(retried) == expected
