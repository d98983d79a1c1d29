"""Large results streamed in many record batches, and concurrent streams."""

from __future__ import annotations

import threading

import pyarrow.compute as pc
import pytest

from mesh_helpers import (
    TABLES,
    adbc_connect,
    adbc_query,
    command_prepared_statement_query,
    command_statement_query,
    flight_command_info,
    flight_read_all,
)

BIG_TABLES = ["clinical.encounters.visits", "clinical.labs.results"]
ID_COLUMN = {"clinical.encounters.visits": "encounter_id", "clinical.labs.results": "result_id"}


@pytest.mark.parametrize("fqtn", BIG_TABLES)
def test_adbc_record_batch_reader(adbc_conn, oracle, fqtn):
    id_col = ID_COLUMN[fqtn]
    with adbc_conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {fqtn}")
        reader = cur.fetch_record_batch()
        assert reader.schema.names == [c.name for c in TABLES[fqtn]]
        batches = rows = 0
        id_sum = 0
        for batch in reader:
            batches += 1
            rows += batch.num_rows
            s = pc.sum(batch.column(id_col)).as_py()
            id_sum += s or 0
    want_rows = oracle.count(fqtn)
    assert rows == want_rows
    assert batches > 1, f"{rows} rows arrived in a single batch"
    assert id_sum == int(oracle.scalar(f"SELECT sum({id_col}) FROM {fqtn}"))


def test_pyarrow_flight_do_get_chunks(flight_client, oracle):
    fqtn = "clinical.encounters.visits"
    info = flight_command_info(flight_client, command_statement_query(f"SELECT * FROM {fqtn}"))
    assert len(info.endpoints) >= 1
    table, chunks = flight_read_all(flight_client, info)
    want = oracle.count(fqtn)
    assert table.num_rows == want
    assert chunks > 1, f"{table.num_rows} rows in {chunks} chunk(s)"
    assert info.schema.equals(table.schema), f"FlightInfo schema {info.schema} != DoGet schema {table.schema}"
    if info.total_records >= 0:
        assert info.total_records == want
    assert set(table.column("admit_month").unique().to_pylist()) == set(
        oracle.query(f"SELECT DISTINCT admit_month FROM {fqtn}").column(0).to_pylist()
    )


def test_abandoned_stream_does_not_wedge_server(adbc_conn, healthy):
    with adbc_conn.cursor() as cur:
        cur.execute("SELECT * FROM clinical.encounters.visits")
        reader = cur.fetch_record_batch()
        first = reader.read_next_batch()
        assert first.num_rows > 0
        reader.close()
    healthy(adbc_conn)


def test_pyarrow_abandoned_do_get(flight_client, adbc_conn, healthy):
    info = flight_command_info(flight_client, command_statement_query("SELECT * FROM clinical.labs.results"))
    reader = flight_client.do_get(info.endpoints[0].ticket)
    chunk = reader.read_chunk()
    assert chunk.data.num_rows > 0
    reader.cancel()
    healthy(adbc_conn)


def test_two_interleaved_streams(server, oracle, admin_token):
    a = adbc_connect(server.uri, admin_token)
    b = adbc_connect(server.uri, admin_token)
    try:
        ca, cb = a.cursor(), b.cursor()
        ca.execute("SELECT encounter_id FROM clinical.encounters.visits")
        cb.execute("SELECT result_id FROM clinical.labs.results")
        ra, rb = ca.fetch_record_batch(), cb.fetch_record_batch()
        rows = {"a": 0, "b": 0}
        live = {"a": ra, "b": rb}
        while live:
            for key in list(live):
                try:
                    rows[key] += live[key].read_next_batch().num_rows
                except StopIteration:
                    del live[key]
        assert rows["a"] == oracle.count("clinical.encounters.visits")
        assert rows["b"] == oracle.count("clinical.labs.results")
        ca.close()
        cb.close()
    finally:
        a.close()
        b.close()


def test_concurrent_queries(server, oracle, admin_token):
    """Eight clients at once, each on its own connection; all answers correct."""
    queries = [
        (f"SELECT count(*) AS n FROM {fqtn}", oracle.count(fqtn)) for fqtn in sorted(TABLES)
    ] + [
        ("SELECT count(*) AS n FROM clinical.encounters.visits WHERE admit_month = '2025-02'",
         oracle.count("clinical.encounters.visits", "admit_month = '2025-02'")),
        ("SELECT count(*) AS n FROM billing.claims.claims WHERE status = 'paid'",
         oracle.count("billing.claims.claims", "status = 'paid'")),
    ]
    results: dict[int, object] = {}

    def worker(i: int, sql: str) -> None:
        try:
            conn = adbc_connect(server.uri, admin_token)
            try:
                results[i] = adbc_query(conn, sql).column("n")[0].as_py()
            finally:
                conn.close()
        except Exception as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i, q)) for i, (q, _) in enumerate(queries)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in threads), "some concurrent queries did not finish in 180s"
    for i, (sql, want) in enumerate(queries):
        assert results.get(i) == want, f"{sql}: got {results.get(i)!r}, oracle {want}"


# --------------------------------------------------------------------------
# The hand-written protobuf encoding used above, checked against protoc output
# (flightsql-dbapi ships generated Flight SQL bindings).  Needs no server.
# --------------------------------------------------------------------------


def test_hand_encoded_commands_match_protobuf():
    from flightsql import flightsql_pb2 as pb
    from google.protobuf import any_pb2

    def packed(msg) -> bytes:
        wrapper = any_pb2.Any()
        wrapper.Pack(msg)
        return wrapper.SerializeToString()

    for sql in ["SELECT 1", "SELECT 'ünïcödé' AS s", "SELECT " + "x" * 300]:
        assert command_statement_query(sql) == packed(pb.CommandStatementQuery(query=sql))
    handle = bytes(range(200))
    assert command_prepared_statement_query(handle) == packed(
        pb.CommandPreparedStatementQuery(prepared_statement_handle=handle)
    )
    decoded = any_pb2.Any()
    decoded.ParseFromString(command_statement_query("SELECT 1"))
    assert decoded.type_url == "type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
