"""A domain served by its own node: `meshgate demo --domain-node clinical`.

Two meshgate processes on loopback: the demo gateway, and the clinical domain's node
serving the clinical products from their files, trusting only the tokens the gateway
signs for it (its JWKS). The gateway federates every clinical table to the node,
acting as each caller; a second, plain demo over the same directory serves clinical
from its files, and every persona must see the same through both.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import adbc_driver_manager as adm
import pytest

from conftest import start_server
from mesh_helpers import (
    FlightConn,
    Oracle,
    assert_rows_equal,
    command_statement_query,
    mint_token,
    outcome,
    query_once,
)
from policy_model import PERSONAS

# Large enough that a result outgrows the transport's buffers (the mid-stream test).
NODE_SCALE = "0.1"

# Queries touching the federated domain: filters the node applies, filters it cannot
# (arithmetic), aggregates, a cross-domain join, a virtual derived table over it.
QUERIES = [
    "SELECT * FROM clinical.encounters.visits WHERE kind = 'inpatient' AND encounter_id < 400",
    "SELECT encounter_id, region, diagnosis_code FROM clinical.encounters.visits "
    "WHERE encounter_id % 97 = 0",
    "SELECT region, kind, count(*) AS n, min(admitted_at) AS first FROM clinical.encounters.visits "
    "GROUP BY region, kind",
    "SELECT test_code, count(*) AS n, sum(value) AS total FROM clinical.labs.results "
    "WHERE abnormal GROUP BY test_code",
    "SELECT v.encounter_id, v.region, p.birth_date, p.postcode FROM clinical.encounters.visits v "
    "JOIN patients.registry.patients p ON v.patient_id = p.patient_id WHERE v.encounter_id < 300",
    "SELECT * FROM analytics.readmissions.stays WHERE encounter_id < 500",
    "SELECT count(*) FROM clinical.encounters.visits",
]


class Federation:
    def __init__(self, mesh_dir: Path, federated, plain, meshgate_bin):
        self.mesh_dir, self.federated, self.plain = mesh_dir, federated, plain
        self.meshgate_bin = meshgate_bin
        self.tokens = {
            name: mint_token(meshgate_bin, "--demo-dir", mesh_dir, *persona.mint_args())
            for name, persona in PERSONAS.items()
        }

    @property
    def node_audit(self) -> Path:
        return self.mesh_dir / "nodes" / "clinical" / "audit.jsonl"

    def audit_records(self) -> list[dict]:
        return [json.loads(line) for line in self.node_audit.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def federation(tmp_path_factory, meshgate_bin):
    mesh_dir = tmp_path_factory.mktemp("domain-node") / "mesh"
    common = ["--dir", mesh_dir, "--scale", NODE_SCALE, "--listen", "127.0.0.1:0",
              "--http-listen", "127.0.0.1:0", "--pg-listen", "127.0.0.1:0", "--portal-listen", "127.0.0.1:0"]
    federated = start_server(
        [meshgate_bin, "demo", *common, "--domain-node", "clinical", "--verify-pushdown"], "federated",
        env={"MESHGATE_LOG": "warn,meshgate_nodes=info"})
    try:
        plain = start_server([meshgate_bin, "demo", *common], "plain")
        try:
            yield Federation(mesh_dir, federated, plain, meshgate_bin)
        finally:
            plain.stop()
    finally:
        federated.stop()


def run(server, token: str, sql: str):
    return query_once(server.uri, token, sql)


@pytest.mark.parametrize("persona", sorted(PERSONAS))
def test_every_persona_sees_the_same_through_the_node(federation, persona):
    token = federation.tokens[persona]
    for sql in QUERIES:
        kind, federated = outcome(federation.federated, token, sql)
        plain_kind, plain = outcome(federation.plain, token, sql)
        assert kind == plain_kind, f"{persona}: {sql}\nfederated: {federated}\nplain: {plain}"
        if kind == "rows":
            assert_rows_equal(federated, plain, context=f"{persona}: {sql}: ")
        else:
            # A product denied here is as missing through the node as from files.
            assert federated.split("query_id")[0] == plain.split("query_id")[0]


def test_a_join_of_a_federated_and_a_local_product_matches_duckdb(federation):
    sql = (
        "SELECT c.payer, v.kind, count(*) AS n, sum(c.amount) AS billed "
        "FROM billing.claims.claims c JOIN clinical.encounters.visits v "
        "ON c.encounter_id = v.encounter_id WHERE v.region = 'north' GROUP BY c.payer, v.kind"
    )
    got = run(federation.federated, federation.tokens["dev"], sql)
    assert got.num_rows > 0
    assert_rows_equal(got, Oracle(federation.mesh_dir).query(sql))


def test_the_node_audits_the_real_caller_of_every_federated_query(federation):
    before = len(federation.audit_records())
    for persona in ("ana", "ben"):
        run(federation.federated, federation.tokens[persona],
            "SELECT count(*) FROM clinical.labs.results WHERE test_code = 'HBA1C'")
    records = federation.audit_records()[before:]
    subjects = {r["subject"] for r in records if r.get("tables") == ["clinical.labs.results"]}
    assert {"ana", "ben"} <= subjects, records
    assert {r["issuer"] for r in records} == {"meshgate-demo-gateway"}


def test_filters_run_on_the_node(federation):
    token = federation.tokens["dev"]
    total = run(federation.plain, token, "SELECT count(*) AS n FROM clinical.encounters.visits")["n"][0].as_py()
    sql = "SELECT encounter_id FROM clinical.encounters.visits WHERE kind = 'inpatient'"
    expected = run(federation.plain, token, sql).num_rows
    before = len(federation.audit_records())
    assert run(federation.federated, token, sql).num_rows == expected
    shipped = [r["rows"] for r in federation.audit_records()[before:] if r.get("rows") is not None]
    # Only the inpatient rows crossed the wire: the node filtered.
    assert shipped == [expected], (shipped, expected, total)
    assert expected < total


def shipped_rows(federation, sql: str, persona: str) -> tuple[list[int], object]:
    """The rows each node query answered while the gateway ran `sql`, and its answer."""
    token = federation.tokens[persona]
    before = len(federation.audit_records())
    got = run(federation.federated, token, sql)
    assert_rows_equal(got, run(federation.plain, token, sql), context=f"{persona}: {sql}: ")
    records = federation.audit_records()[before:]
    return [r["rows"] for r in records if r.get("rows") is not None], got


def test_aggregates_and_joins_of_node_tables_run_on_the_node(federation):
    sql = "SELECT kind, count(*) AS n FROM clinical.encounters.visits GROUP BY kind"
    shipped, got = shipped_rows(federation, sql, "dev")
    total = sum(got["n"].to_pylist())
    # The node grouped: one row per kind crossed the wire, not every visit (the second
    # query is --verify-pushdown's: the same part as a per-table scan).
    assert got.num_rows == 3 and sorted(shipped) == [3, total], shipped
    sql = (
        "SELECT v.kind, count(*) AS n, max(r.value) AS top FROM clinical.encounters.visits v "
        "JOIN clinical.labs.results r ON r.encounter_id = v.encounter_id "
        "WHERE r.abnormal GROUP BY v.kind ORDER BY v.kind"
    )
    shipped, got = shipped_rows(federation, sql, "dev")
    # Both tables are on the node: the join ran there too, as one query (then each
    # table alone, for the verification).
    assert len(shipped) == 3 and shipped[0] == got.num_rows, shipped
    assert min(shipped[1:]) > 100 * got.num_rows, shipped


def test_a_restricted_table_is_read_through_its_policy_here(federation):
    """ben sees diagnosis codes masked: his reads of visits go through the gateway's
    secured scan, so the node sends rows and the gateway groups them."""
    sql = "SELECT kind, count(*) AS n FROM clinical.encounters.visits GROUP BY kind"
    shipped, got = shipped_rows(federation, sql, "ben")
    total = sum(got["n"].to_pylist())
    assert shipped == [total], shipped


def test_a_table_read_only_in_aggregate_is_aggregated_on_the_node(federation):
    """ben reads lab results only in groups of 11 or more patients, here and on the node,
    which refuses to send him raw rows: the gateway sends the aggregate, threshold
    included, whole, and the node holds him to its own rule too."""
    sql = ("SELECT test_code, count(*) AS n, round(avg(value), 6) AS mean FROM clinical.labs.results "
           "WHERE abnormal GROUP BY test_code")
    shipped, got = shipped_rows(federation, sql, "ben")
    assert got.num_rows > 0 and shipped and shipped[0] == got.num_rows, shipped
    # His raw rows stay refused, with the gateway's own refusal.
    kind, message = outcome(federation.federated, federation.tokens["ben"],
                            "SELECT patient_id, value FROM clinical.labs.results WHERE abnormal")
    assert kind == "error" and "aggregate" in message, message


def test_a_node_stricter_than_the_gateway_says_it_refused(federation):
    """ben's lab results joined with visits (which he reads with hashed diagnoses, through
    the gateway's secured scan) cannot go to the node whole: his raw lab rows would have
    to leave it, and the node refuses them. He is told so, not that storage failed;
    without the node the gateway answers (the threshold applied)."""
    sql = ("SELECT v.kind, count(*) AS n FROM clinical.labs.results r "
           "JOIN clinical.encounters.visits v ON v.encounter_id = r.encounter_id GROUP BY v.kind")
    with pytest.raises(adm.Error) as refused:
        run(federation.federated, federation.tokens["ben"], sql)
    assert refused.value.status_code == adm.AdbcStatusCode.UNAUTHORIZED, refused.value
    message = str(refused.value)
    assert "refused this query for you" in message and "clinical.labs.results" in message, message
    kind, plain = outcome(federation.plain, federation.tokens["ben"], sql)
    assert kind == "rows" and plain.num_rows > 0, plain


def test_the_verified_pushdown_agrees_with_per_table_scans(federation):
    """The federated gateway runs with --verify-pushdown: every part it sent whole
    was also run as per-table scans, and the log says whether the answers agreed."""
    output = federation.federated.output()
    assert "pushdown verified" in output, output[-4000:]
    assert "pushdown verification failed" not in output, output[-4000:]


def test_the_gateway_publishes_the_key_nodes_trust(federation):
    with urllib.request.urlopen(f"{federation.federated.http_url}/.well-known/jwks.json", timeout=10) as response:
        jwks = json.load(response)
    [key] = jwks["keys"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["alg"] == "EdDSA"
    on_disk = json.loads((federation.mesh_dir / "nodes" / "gateway-jwks.json").read_text())
    assert on_disk == jwks
    assert "d" not in key  # the public half only


def node_pids(mesh_dir: Path) -> list[int]:
    found = subprocess.run(["pgrep", "-f", f"demo-node --dir {mesh_dir}"], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def kill_node(mesh_dir: Path) -> None:
    pids = node_pids(mesh_dir)
    assert pids, "the domain node is not running"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def test_a_node_killed_mid_stream_ends_the_stream_with_a_clear_error(federation):
    """Last in the module: stops the node, then checks that a node that is down is
    UNAVAILABLE and that other products keep serving."""
    import pyarrow.flight as flight

    token = federation.tokens["dev"]
    conn = FlightConn(federation.federated.uri, token)
    query = command_statement_query("SELECT * FROM clinical.encounters.visits")
    info = conn.get_flight_info(flight.FlightDescriptor.for_command(query))
    reader = conn.do_get(info.endpoints[0].ticket)
    # The client reads one batch and waits: flow control holds the node mid-stream.
    first = reader.read_chunk()
    assert first.data.num_rows > 0
    kill_node(federation.mesh_dir)
    with pytest.raises(flight.FlightError) as failure:
        while True:
            reader.read_chunk()
    message = str(failure.value)
    assert "clinical.encounters.visits" in message, message
    assert "127.0.0.1" not in message, message  # the node's address stays in the log

    time.sleep(0.5)
    with pytest.raises(Exception) as down:
        run(federation.federated, token, "SELECT * FROM clinical.encounters.visits")
    message = str(down.value)
    assert "UNAVAILABLE" in message.upper() and "clinical.encounters.visits" in message, message
    assert "127.0.0.1" not in message, message
    assert run(federation.federated, token, "SELECT count(*) AS n FROM billing.claims.claims")["n"][0].as_py() > 0
    assert federation.federated.alive()
