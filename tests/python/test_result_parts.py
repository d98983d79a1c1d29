"""Results in parts: a statement whose plan reads files in independent partitions (a
scan, filtered, projected, masked) is answered with several endpoints, one stream each,
so clients that read endpoints in parallel (ADBC `execute_partitions`, Spark, Dask) use
more than one stream. Together the parts are exactly the whole result, on whichever
replica each part is redeemed, and each part is governed like the whole.

The replica here splits results into up to 3 parts at any size (`transport.max_endpoints`,
`endpoints_min_scan_bytes: 0`) and plans with 3 target partitions; the demo server it
shares a directory with keeps the defaults (one partition per core; no split below 64
MiB), so a part redeemed there is planned again with the issuer's partitioning (3 is no
2- or 4-core machine's default, so the issuer's count must travel with the ticket).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import DEMO_SCALE, start_server
from mesh_helpers import (
    ServerProcess,
    _len_field,
    adbc_connect,
    bearer,
    command_statement_query,
    flight_call_options,
)
from policy_model import PERSONAS

# No ORDER BY, no aggregate, no limit: a scan pipeline, served in parts.
SCAN = "SELECT encounter_id, patient_id, admit_month FROM clinical.encounters.visits"
PARTS = 3


@pytest.fixture(scope="module")
def splitting(demo, meshgate_bin, tmp_path_factory) -> ServerProcess:
    """A replica of the demo that serves results in up to three parts."""
    config = tmp_path_factory.mktemp("parts") / "gateway.yaml"
    config.write_text(
        "transport:\n"
        f"  max_endpoints: {PARTS}\n"
        "  endpoints_min_scan_bytes: 0\n"
        "engine:\n"
        f"  target_partitions: {PARTS}\n"
    )
    srv = start_server(
        [
            meshgate_bin, "demo", "--dir", demo.mesh_dir, "--scale", DEMO_SCALE, "--config", config,
            "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--pg-listen", "127.0.0.1:0", "--portal-listen", "127.0.0.1:0",
        ],
        "splitting replica",
    )
    try:
        yield srv
    finally:
        srv.stop()


def _plan(server, token: str, sql: str) -> flight.FlightInfo:
    descriptor = flight.FlightDescriptor.for_command(command_statement_query(sql))
    return flight.connect(server.uri).get_flight_info(descriptor, flight_call_options(bearer(token)))


def _read(server, token: str, endpoint: flight.FlightEndpoint) -> pa.Table:
    options = flight_call_options(bearer(token))
    return flight.connect(server.uri).do_get(endpoint.ticket, options).read_all()


def _rows(table: pa.Table) -> Counter:
    """The rows of `table` as a multiset (parts come in no order among themselves)."""
    return Counter(zip(*(table.column(i).to_pylist() for i in range(table.num_columns))))


def _whole(server, token: str, sql: str) -> pa.Table:
    info = _plan(server, token, sql)
    assert len(info.endpoints) == 1, "the demo server's defaults serve a small result whole"
    return _read(server, token, info.endpoints[0])


def test_a_scan_is_served_in_parts_that_together_are_the_whole_result(server, splitting, admin_token):
    info = _plan(splitting, admin_token, SCAN)
    assert len(info.endpoints) == PARTS
    parts = [_read(splitting, admin_token, e) for e in info.endpoints]
    for part in parts:
        assert part.schema.equals(info.schema, check_metadata=True)
    assert all(part.num_rows > 0 for part in parts), [p.num_rows for p in parts]
    whole = _whole(server, admin_token, SCAN)
    assert sum(part.num_rows for part in parts) == whole.num_rows
    assert sum((_rows(part) for part in parts), Counter()) == _rows(whole)


def test_parts_are_redeemed_on_any_replica_and_again(server, splitting, admin_token):
    """Each part redeemed on the other replica (which plans with other defaults) and then
    again where it was issued: the same rows each time, and exactly the whole result."""
    info = _plan(splitting, admin_token, SCAN)
    assert len(info.endpoints) == PARTS
    elsewhere = [_read(server, admin_token, e) for e in info.endpoints]
    here = [_read(splitting, admin_token, e) for e in info.endpoints]
    for a, b in zip(elsewhere, here):
        assert _rows(a) == _rows(b)
    whole = _whole(server, admin_token, SCAN)
    assert sum((_rows(part) for part in elsewhere), Counter()) == _rows(whole)


@pytest.mark.parametrize("sql", [
    SCAN + " ORDER BY encounter_id",
    "SELECT admit_month, count(*) FROM clinical.encounters.visits GROUP BY admit_month",
    SCAN + " LIMIT 50",
    "SELECT v.encounter_id FROM clinical.encounters.visits v JOIN clinical.encounters.visits w "
    "ON v.encounter_id = w.encounter_id",
    "EXPLAIN " + SCAN,
    "SELECT domain, product FROM mesh.meta.products",
])
def test_results_that_depend_on_more_than_one_partition_are_served_whole(splitting, admin_token, sql):
    info = _plan(splitting, admin_token, sql)
    assert len(info.endpoints) == 1
    assert _read(splitting, admin_token, info.endpoints[0]).num_rows > 0


@pytest.mark.parametrize("persona", ["ben", "ana"])
def test_each_part_is_governed_as_the_whole(server, splitting, mint, persona):
    """An analyst (diagnosis codes hashed) and a clinician (rows of her region only):
    the parts, together, are exactly what each sees of the table as one stream (the
    policy applies inside every part)."""
    token = mint(*PERSONAS[persona].mint_args())
    sql = "SELECT * FROM clinical.encounters.visits"
    info = _plan(splitting, token, sql)
    assert len(info.endpoints) == PARTS
    parts = [_read(splitting, token, e) for e in info.endpoints]
    whole = _whole(server, token, sql)
    assert parts[0].schema.names == whole.schema.names
    assert sum((_rows(part) for part in parts), Counter()) == _rows(whole)


def test_a_part_is_another_principals_or_a_forged_one_is_unknown(splitting, admin_token, mint):
    info = _plan(splitting, admin_token, SCAN)
    other = mint("--sub", "someone-else", "--role", "admin")
    with pytest.raises(pa.ArrowKeyError) as refused:  # NOT_FOUND
        _read(splitting, other, info.endpoints[1])
    assert "unknown or expired" in str(refused.value)
    ticket = bytearray(info.endpoints[1].ticket.ticket)
    ticket[-3] ^= 0x01
    with pytest.raises(pa.ArrowKeyError):
        flight.connect(splitting.uri).do_get(
            flight.Ticket(bytes(ticket)), flight_call_options(bearer(admin_token))
        ).read_all()


def test_cancelling_the_flight_info_voids_every_part(splitting, admin_token):
    info = _plan(splitting, admin_token, SCAN)
    client = flight.connect(splitting.uri)
    body = _len_field(1, info.serialize())
    results = list(client.do_action(flight.Action("CancelFlightInfo", body), flight_call_options(bearer(admin_token))))
    assert results, "CancelFlightInfo answers"
    for endpoint in info.endpoints:
        with pytest.raises(pa.ArrowKeyError):
            _read(splitting, admin_token, endpoint)


def test_adbc_reads_partitions_on_separate_connections_to_separate_replicas(server, splitting, admin_token):
    with adbc_connect(splitting.uri, admin_token) as conn, conn.cursor() as cur:
        partitions, schema = cur.adbc_execute_partitions(SCAN)
    assert len(partitions) == PARTS
    tables = []
    for i, partition in enumerate(partitions):
        replica = (server, splitting)[i % 2]
        with adbc_connect(replica.uri, admin_token) as conn, conn.cursor() as cur:
            cur.adbc_read_partition(partition)
            tables.append(cur.fetch_arrow_table())
    whole = _whole(server, admin_token, SCAN)
    assert sum((_rows(t) for t in tables), Counter()) == _rows(whole)
    # ADBC's own execute reads every endpoint too.
    with adbc_connect(splitting.uri, admin_token) as conn, conn.cursor() as cur:
        cur.execute(SCAN)
        assert _rows(cur.fetch_arrow_table()) == _rows(whole)


def test_each_part_writes_its_own_audit_record(demo, splitting, admin_token):
    statement = SCAN + " WHERE encounter_id > 0"
    info = _plan(splitting, admin_token, statement)
    total = sum(_read(splitting, admin_token, e).num_rows for e in info.endpoints)
    digest = hashlib.sha256(statement.encode()).hexdigest()
    audit = Path(demo.mesh_dir) / "audit.jsonl"
    deadline = time.monotonic() + 10
    while True:
        redeemed = [
            record for record in map(json.loads, audit.read_text().splitlines())
            if record.get("rpc") == "DoGet/TicketStatementQuery"
            and record.get("statement_sha256") == digest
        ]
        if len(redeemed) >= PARTS or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sorted(r["part"] for r in redeemed) == [f"{k}/{PARTS}" for k in range(1, PARTS + 1)]
    assert len({r["query_id"] for r in redeemed}) == 1, "the parts are one query"
    assert sum(r["rows"] for r in redeemed) == total
