"""Scale-out on Apache DataFusion Ballista: `meshgate scheduler` and two `meshgate
executor` processes on loopback, and a gateway (the demo, on the demo's directory) whose
`engine.distributed` sends every query it can to them. Answers, statuses and policies
are the same as the demo server's, which runs everything itself; the masks computed on
the executors (with their own copy of the masking key) agree with the gateway's.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import DEMO_SCALE, start_server
from mesh_helpers import (
    DEMO_SECRET_FILE,
    ServerProcess,
    bearer,
    command_statement_query,
    flight_call_options,
    free_port,
    hermetic_env,
)
from policy_model import PERSONAS


def _wait_for_port(port: int, proc: subprocess.Popen, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode} (see its .log in the test's directory)",
                        pytrace=False)
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"{name} did not listen on {port} within {timeout:.0f}s", pytrace=False)


class Cluster:
    def __init__(self, scheduler: int, gateway: ServerProcess, executors: list[subprocess.Popen],
                 work_dirs: list[Path]):
        self.scheduler, self.gateway, self.executors = scheduler, gateway, executors
        self.work_dirs = work_dirs

    def jobs(self) -> set[str]:
        """The jobs whose data the executors keep (a directory per job id; spill files
        go under `spill/`)."""
        return {p.name for d in self.work_dirs if d.is_dir() for p in d.iterdir() if p.name != "spill"}


@pytest.fixture(scope="module")
def cluster(demo, meshgate_bin, tmp_path_factory):
    work = tmp_path_factory.mktemp("cluster")
    # The executors read the demo's storage (local files) and mask with its key.
    executor_config = work / "executor.yaml"
    executor_config.write_text(f"masking:\n  key_file: {demo.mesh_dir / DEMO_SECRET_FILE}\n")
    procs: list[subprocess.Popen] = []

    def spawn(argv, name):
        # Output to a file: a pipe nobody reads would stall a chatty process.
        log = open(work / f"{name.replace(' ', '-')}.log", "w")
        proc = subprocess.Popen([str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT,
                                env=hermetic_env(), start_new_session=True)
        log.close()
        procs.append(proc)
        return proc

    gateway = None
    try:
        scheduler_port = free_port()
        scheduler = spawn([meshgate_bin, "scheduler", "--listen", f"127.0.0.1:{scheduler_port}"], "scheduler")
        _wait_for_port(scheduler_port, scheduler, "scheduler")
        executors, work_dirs = [], []
        for i in range(2):
            flight_port, grpc_port = free_port(), free_port()
            proc = spawn([
                meshgate_bin, "executor", "--config", executor_config,
                "--scheduler", f"127.0.0.1:{scheduler_port}", "--bind-host", "127.0.0.1",
                "--flight-port", flight_port, "--grpc-port", grpc_port, "--slots", "2",
                "--work-dir", work / f"executor-{i}", "--allow-local-domains",
            ], f"executor {i}")
            work_dirs.append(work / f"executor-{i}")
            _wait_for_port(flight_port, proc, f"executor {i}")
            _wait_for_port(grpc_port, proc, f"executor {i}")
            executors.append(proc)
        gateway_config = work / "gateway.yaml"
        gateway_config.write_text(
            "engine:\n"
            "  distributed:\n"
            f"    scheduler: 127.0.0.1:{scheduler_port}\n"
            "    min_scan_bytes: 0\n"
        )
        gateway = start_server(
            [
                meshgate_bin, "demo", "--dir", demo.mesh_dir, "--scale", DEMO_SCALE, "--config", gateway_config,
                "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--pg-listen", "127.0.0.1:0",
            ],
            "distributed gateway",
        )
        yield Cluster(scheduler_port, gateway, executors, work_dirs)
    finally:
        if gateway is not None:
            gateway.stop()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _query(server, token: str, sql: str, timeout: str | None = None) -> pa.Table:
    client = flight.connect(server.uri)
    options = flight_call_options(bearer(token))
    if timeout is not None:
        options = flight.FlightCallOptions(timeout=options.timeout, headers=[
            (b"authorization", bearer(token).encode()), (b"x-meshgate-timeout", timeout.encode())])
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command_statement_query(sql)), options)
    return pa.concat_tables([client.do_get(e.ticket, options).read_all() for e in info.endpoints])


def _rows(table: pa.Table) -> Counter:
    return Counter(zip(*(table.column(i).to_pylist() for i in range(table.num_columns))))


# What the gateway logs when a job fails on the cluster and runs in the gateway.
FALLBACK = "the cluster could not run a query"

QUERIES = [
    "SELECT count(*) AS n FROM clinical.encounters.visits WHERE diagnosis_code LIKE 'E%'",
    "SELECT region, count(*) AS n, min(encounter_id) AS first FROM clinical.encounters.visits GROUP BY region",
    "SELECT v.region, count(*) AS n, sum(c.amount) AS total FROM clinical.encounters.visits v "
    "JOIN billing.claims.claims c ON c.encounter_id = v.encounter_id GROUP BY v.region",
    "SELECT encounter_id, patient_id FROM clinical.encounters.visits ORDER BY encounter_id DESC LIMIT 25",
    "SELECT patient_id, row_number() OVER (PARTITION BY patient_id ORDER BY encounter_id) AS nth "
    "FROM clinical.encounters.visits",
    "SELECT p.region, count(DISTINCT v.patient_id) AS patients FROM patients.registry.patients p "
    "JOIN clinical.encounters.visits v ON v.patient_id = p.patient_id GROUP BY p.region",
]


@pytest.mark.parametrize("sql", QUERIES)
def test_the_cluster_answers_as_the_gateway_alone(server, cluster, admin_token, sql):
    before = cluster.jobs()
    distributed = _query(cluster.gateway, admin_token, sql)
    local = _query(server, admin_token, sql)
    assert distributed.schema.names == local.schema.names
    assert _rows(distributed) == _rows(local)
    assert distributed.num_rows > 0
    assert cluster.jobs() - before, "the query did not run on the cluster"
    assert FALLBACK not in cluster.gateway.output(), "a job failed and ran in the gateway"


@pytest.mark.parametrize("persona", ["ana", "ben", "cara"])
def test_policies_travel_with_the_plan(server, cluster, mint, persona):
    """Row filters (ana: her region), hashed diagnosis codes computed on the executors
    (ben), and a product denied (cara: visits do not exist for her) answer as on the
    gateway alone."""
    token = mint(*PERSONAS[persona].mint_args())
    sql = "SELECT region, diagnosis_code, count(*) AS n FROM clinical.encounters.visits GROUP BY 1, 2"
    try:
        local = _query(server, token, sql)
    except pa.ArrowException as refused_locally:
        with pytest.raises(type(refused_locally)) as refused:
            _query(cluster.gateway, token, sql)
        assert str(refused.value).split(".")[0] == str(refused_locally).split(".")[0]
        return
    before = cluster.jobs()
    assert _rows(_query(cluster.gateway, token, sql)) == _rows(local)
    assert cluster.jobs() - before, "the query did not run on the cluster"
    assert FALLBACK not in cluster.gateway.output(), "a job failed and ran in the gateway"


def test_tables_the_cluster_cannot_read_run_on_the_gateway(server, cluster, admin_token):
    """A Delta table (its files reached through stores of the gateway's own making) and
    the mesh's own tables run in the gateway, with the same answers."""
    for sql in ["SELECT count(*) AS n, sum(value) AS total FROM clinical.labs.results",
                "SELECT domain, product FROM mesh.meta.products"]:
        assert _rows(_query(cluster.gateway, admin_token, sql)) == _rows(_query(server, admin_token, sql))


def test_functions_bounded_in_the_gateway_keep_their_queries_there(server, cluster, admin_token):
    """`repeat` is bounded in the gateway's sessions (values within limits); an
    executor has DataFusion's own: a plan calling it runs in the gateway."""
    sql = "SELECT repeat(diagnosis_code, 3) AS r, count(*) AS n FROM clinical.encounters.visits GROUP BY 1"
    before = cluster.jobs()
    assert _rows(_query(cluster.gateway, admin_token, sql)) == _rows(_query(server, admin_token, sql))
    assert not cluster.jobs() - before, "a bounded function ran on the cluster"


def test_scalar_subqueries_stay_in_the_gateway(server, cluster, admin_token):
    """Ballista cuts a stage between a scalar subquery and its uses (its executors
    cannot decode that): such a plan runs in the gateway."""
    sql = ("SELECT region, count(*) AS n FROM clinical.encounters.visits GROUP BY region "
           "HAVING count(*) > (SELECT count(*) / 10 FROM clinical.encounters.visits)")
    before = cluster.jobs()
    assert _rows(_query(cluster.gateway, admin_token, sql)) == _rows(_query(server, admin_token, sql))
    assert not cluster.jobs() - before


def test_a_cluster_that_cannot_be_reached_costs_nothing_but_time(demo, meshgate_bin, server, admin_token,
                                                                 tmp_path):
    """A gateway whose scheduler is gone runs its queries itself: same answers."""
    config = tmp_path / "gateway.yaml"
    config.write_text(f"engine:\n  distributed:\n    scheduler: 127.0.0.1:{free_port()}\n    min_scan_bytes: 0\n")
    gateway = start_server(
        [
            meshgate_bin, "demo", "--dir", demo.mesh_dir, "--scale", DEMO_SCALE, "--config", config,
            "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--pg-listen", "127.0.0.1:0",
        ],
        "gateway of a lost cluster",
    )
    try:
        for sql in QUERIES[:3]:
            assert _rows(_query(gateway, admin_token, sql)) == _rows(_query(server, admin_token, sql))
    finally:
        gateway.stop()


def test_bad_sql_and_missing_tables_fail_as_on_the_gateway(cluster, admin_token):
    with pytest.raises(pa.ArrowInvalid) as bad:
        _query(cluster.gateway, admin_token, "SELEC 1")
    assert "Expected" in str(bad.value)
    with pytest.raises(pa.ArrowKeyError):
        _query(cluster.gateway, admin_token, "SELECT * FROM clinical.nowhere.nothing")


# Last in the module: it kills an executor.
def test_an_executor_killed_mid_query_costs_a_clear_error_never_a_wrong_answer(server, cluster, admin_token):
    """A query running on both executors when one is killed (SIGKILL) ends whole or with
    a clear error, never short or wrong; the query retried runs on the surviving one."""
    sql = ("SELECT a.region, count(*) AS pairs FROM clinical.encounters.visits a "
           "JOIN clinical.encounters.visits b ON a.region = b.region "
           "WHERE a.encounter_id % 2 = 0 GROUP BY a.region")
    expected = _rows(_query(server, admin_token, sql))
    outcome: dict[str, object] = {}

    def run():
        try:
            outcome["answer"] = _query(cluster.gateway, admin_token, sql, timeout="30s")
        except pa.ArrowException as exc:
            outcome["error"] = exc

    before = cluster.jobs()
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
    if "answer" in outcome:
        assert _rows(outcome["answer"]) == expected, "a wrong or short answer"
    else:
        message = str(outcome["error"])
        assert "cluster" in message or "time limit" in message or "deadline" in message.lower(), message
    retried = None
    for _ in range(30):
        try:
            retried = _query(cluster.gateway, admin_token, sql, timeout="30s")
            break
        except pa.ArrowException:
            time.sleep(1)
    assert retried is not None, "no retry succeeded on the surviving executor"
    assert _rows(retried) == expected
